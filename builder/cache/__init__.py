"""The build cache: step keys, the sqlite index, source digests, import/export to a registry or
a directory, remote layers, pruning, and the cache root."""
