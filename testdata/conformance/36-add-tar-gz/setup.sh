# Builds the archive ADD extracts: owners and modes git cannot hold, a symlink,
# and a ./ entry with mode 0700 (Docker does not apply it to the destination).
mkdir -p payload/sub
echo "in archive" > payload/file.txt
echo "nested" > payload/sub/nested.txt
chmod 0750 payload/sub/nested.txt
ln -s file.txt payload/link-to-file
chmod 0700 payload
tar --numeric-owner --owner=1234 --group=5678 --mtime=2020-01-01 -C payload -cf - . | gzip -n > archive.tar.gz
rm -rf payload
