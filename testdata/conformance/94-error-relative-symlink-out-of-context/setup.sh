# A relative symlink climbing out of the context, to a file that exists on the host.
echo "host secret outside the context" > ../outside-secret.txt
ln -s ../outside-secret.txt escape
