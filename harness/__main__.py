"""``python -m harness`` is ``trustlab``."""

import sys

from harness.cli import main

sys.exit(main())
