"""``python -m galclust``: the same as the ``galclust`` command."""

import sys

from galclust.cli import main

sys.exit(main())
