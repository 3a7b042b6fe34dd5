# The archive ADD extracts into a symlinked directory of the image: a file and a subdirectory.
mkdir -p payload/sub
echo "in archive" > payload/a.txt
echo "nested" > payload/sub/b.txt
tar --numeric-owner --owner=0 --group=0 --mtime=2020-01-01 -C payload -cf - a.txt sub > archive.tar
rm -rf payload
