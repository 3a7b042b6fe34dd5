# Hardlinks within one copied directory stay hardlinks; named separately they are separate files.
ln dir/a dir/b
ln dir/a dir/sub/c
