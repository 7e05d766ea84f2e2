"""``python -m crossentropy``: the same as the ``crossentropy`` command."""

import sys

from crossentropy.cli import main

if __name__ == "__main__":
    sys.exit(main())
