"""The command line: `pybuild` (console script `builder.cli:main`, or `python3 -m builder.cli`).

app.py parses argv and dispatches on the verb; images.py, history.py and the cache's prune.py
hold the other verbs. Only argparse is imported at start-up.
"""
from builder.cli.app import main

__all__ = ["main"]
