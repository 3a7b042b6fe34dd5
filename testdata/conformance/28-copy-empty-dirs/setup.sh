# Empty directories (git cannot store them) are copied; modes come from the context.
mkdir -p tree/empty tree/nested/empty-too
mkdir -p tree/private
chmod 0700 tree/private
touch tree/private/.keep
