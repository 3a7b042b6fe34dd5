ln -s file.txt tree/link
chmod 0640 tree/file.txt
