# Hardlinks within one copied directory stay hardlinks; named separately they are separate files.
ln dir/a dir/b
mkdir -p dir/sub
ln dir/a dir/sub/c
