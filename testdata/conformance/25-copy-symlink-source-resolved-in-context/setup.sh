# Top-level symlink sources whose targets are resolved with the context as root:
# an absolute target /inside.txt and a relative one climbing above the root both
# land on <context>/inside.txt, not on the host file of the same name.
echo "OUTSIDE the context" > ../inside.txt
ln -s /inside.txt abs-link
ln -s ../../../inside.txt rel-link
