"""``python -m popsteer.sweep sweeps/<name>.yaml``: the sweep runner (see ``popsteer.platform.sweep``)."""

import sys

from popsteer.platform.sweep import main

if __name__ == "__main__":
    sys.exit(main())
