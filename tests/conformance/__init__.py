"""pybuild's differential conformance harness: each case of testdata/conformance built by real
Docker (BuildKit, `--network none`) and by a candidate builder (a command template), both
images loaded into Docker, their configs and exported root filesystems compared entry by entry.

Docker's results are cached by the case's staged content and Docker's version. Use it as a
library (`load_cases`, `run_corpus`, `Options`) or from the command line:
`python3 -m tests.conformance --help`.
"""
from tests.conformance.cases import Case, load_cases
from tests.conformance import report
from tests.conformance.runner import Options, Result, Run, run_corpus

__all__ = ["Case", "Options", "Result", "Run", "load_cases", "report", "run_corpus"]
