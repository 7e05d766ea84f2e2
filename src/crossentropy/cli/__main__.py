import sys

from crossentropy.cli import main

sys.exit(main())
