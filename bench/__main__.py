"""`python -m bench` (make bench): run each benchmark below, in order. Add new ones here."""

import sys

from bench import gallery, models

BENCHES = [models.main, lambda: gallery.main([])]


def main() -> int:
    return max(bench() for bench in BENCHES)


if __name__ == "__main__":
    sys.exit(main())
