"""Where files come from: the build context and .dockerignore, trees to copy from, base images
(local store, archives, directories) and pulling them."""
