mkdir -p srv/tree
echo inside > srv/tree/inside.txt
tar -c --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C srv tree | gzip -n > srv/pkg.tar.gz
tar -c --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -f srv/plain.tar -C srv tree
rm -r srv/tree
