"""`python -m minitx.cli ...`: the same as the `minitx` command."""
import sys

from . import main

sys.exit(main())
