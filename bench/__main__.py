"""``python -m bench ...`` = ``da3-bench ...`` (the network benchmark)."""

import sys

from bench.network import main

sys.exit(main())
