"""``python -m dynascope`` (and ``torchrun -m dynascope``): the same entry point as the ``dynascope`` command."""

import sys

from dynascope.cli import main

sys.exit(main())
