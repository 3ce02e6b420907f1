"""``python -m popsteer.sweep sweeps/<name>.yaml``: the sweep runner (see ``popsteer.platform.sweep``)."""

import sys

from popsteer.app.sweep_cli import main

if __name__ == "__main__":
    sys.exit(main())
