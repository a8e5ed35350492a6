"""`python -m collab` runs the CLI."""

import sys

from collab.cli import main

sys.exit(main())
