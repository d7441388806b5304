"""`python -m fcnseg` (and `torchrun -m fcnseg`) runs the command line."""

import sys

from fcnseg.cli import main

sys.exit(main())
