"""`python -m sparseguidance` (also what torchrun runs) is the console script."""

import sys

from sparseguidance.cli import main

sys.exit(main())
