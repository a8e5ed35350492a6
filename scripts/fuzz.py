"""Fuzz a live collab server: `python scripts/fuzz.py --help`. The harness is tests/fuzz.py,
which the test suite runs briefly (tests/test_fuzz.py); this is its command line."""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.fuzz import main

    sys.exit(main())
