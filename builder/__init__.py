"""pybuild's builder: Dockerfile + context -> image (plan, cache, sandbox, CLI)."""

# The release; pyproject.toml reads it from here. A constant, not importlib.metadata: that import
# and its search of sys.path cost 30-40 ms on every start.
__version__ = "0.1.0"
