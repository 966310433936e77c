"""``python -m harness.runtimes.images``: see :mod:`harness.runtimes.images.cli`."""

import sys

from harness.runtimes.images.cli import main

sys.exit(main())
