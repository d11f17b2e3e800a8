"""``python -m jpegrestore ...`` runs the ``jpegrestore`` command (see jpegrestore.cli)."""

import sys

from jpegrestore.cli import main

if __name__ == "__main__":
    sys.exit(main())
