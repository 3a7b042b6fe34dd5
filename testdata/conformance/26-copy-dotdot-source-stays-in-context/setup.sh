# A file with the same name just outside the context: Docker must NOT pick it up.
echo "OUTSIDE the context" > ../inside.txt
mkdir -p sub
