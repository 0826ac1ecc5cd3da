"""``python -m labelmask``: the ``labelmask`` command (see :mod:`labelmask.cli`)."""

import sys

from labelmask.cli import main

sys.exit(main())
