"""``python -m sweep``: the same as the ``sweep`` command."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
