"""``python -m popsteer``: the ``popsteer`` command line."""

import sys

from popsteer.app.cli import main

sys.exit(main())
