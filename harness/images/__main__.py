"""``python -m harness.images``: see :mod:`harness.images.cli`."""

import sys

from harness.images.cli import main

sys.exit(main())
