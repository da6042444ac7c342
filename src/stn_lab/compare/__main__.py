"""``python -m stn_lab.compare``: see :mod:`stn_lab.compare.cli`."""

import sys

from stn_lab.compare.cli import main

sys.exit(main())
