"""`python3 -m builder.cli`: how the tests and benchmarks run the command line."""
import sys

from builder.cli.app import main

sys.exit(main())
