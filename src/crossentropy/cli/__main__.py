"""``python -m crossentropy.cli``: the same as the ``crossentropy`` command."""

import sys

from crossentropy.cli import main

sys.exit(main())
