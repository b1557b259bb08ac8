"""``python -m beyondbp`` is the ``beyondbp`` command."""

import sys

from .cli import main

sys.exit(main())
