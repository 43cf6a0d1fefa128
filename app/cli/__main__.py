"""`python -m app.cli`: the `lookout` command."""

import sys

from app.cli import main

sys.exit(main())
