# Symlinks inside a copied directory stay symlinks: relative, absolute, dangling, to a dir.
ln -s sub/target.txt tree/relative
ln -s /etc/passwd tree/absolute
ln -s does-not-exist tree/dangling
ln -s sub tree/dirlink
ln -s ../../outside tree/sub/escaping
