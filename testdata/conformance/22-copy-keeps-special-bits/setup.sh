# Special mode bits git cannot store: COPY without --chmod keeps them.
chmod 4755 bits/suid
chmod 2755 bits/sgid
mkdir -p bits/sticky
chmod 1777 bits/sticky
chmod 0600 bits/plain
