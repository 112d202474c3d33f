"""`python -m flows.cli …`, the same as `fmnist …`."""

import sys

from flows.cli import main

sys.exit(main())
