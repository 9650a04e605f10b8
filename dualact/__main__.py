"""``python -m dualact``: the same command line as the ``dualact`` script."""

import sys

from dualact.cli import main

sys.exit(main())
