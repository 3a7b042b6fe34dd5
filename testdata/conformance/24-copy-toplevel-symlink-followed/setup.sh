# A symlink named as the COPY source is followed (file and directory).
ln -s real.txt link.txt
ln -s realdir linkdir
mkdir -p sub
ln -s ../real.txt sub/uplink.txt
