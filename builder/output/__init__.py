"""What a build hands over: the tarball, docker load, push, and the atomic file writes they use."""
