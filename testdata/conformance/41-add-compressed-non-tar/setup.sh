# A compressed file that is not a tar: ADD copies it still compressed.
# gzip -n: no name/timestamp in the header, so both staged copies are byte-identical.
printf 'line one\nline two\n' > notes.txt
gzip -n -c notes.txt > notes.txt.gz
xz -c notes.txt > notes.txt.xz
rm notes.txt
