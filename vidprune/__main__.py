"""``python -m vidprune``: the ``vidprune`` command."""

import sys

from .cli import main

sys.exit(main())
