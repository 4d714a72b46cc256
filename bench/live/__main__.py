"""``python -m bench.live``: see :mod:`bench.live.cli`."""

import sys

from bench.live.cli import main

sys.exit(main())
