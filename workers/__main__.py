"""`python -m workers`: the same as `lookout worker`."""

import sys

from app.cli import main

sys.exit(main(["worker", *sys.argv[1:]]))
