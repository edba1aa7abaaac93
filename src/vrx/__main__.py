"""``python -m vrx`` is the ``vrx`` command."""

import sys

from .cli import main

sys.exit(main())
