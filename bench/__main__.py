"""`python -m bench` (make bench): run each benchmark below, in order. Add new ones here.

Each writes its own section of bench/RESULTS.md.
"""

import sys

from bench import fanout, gallery, models, plumbing, throughput

BENCHES = [models.main, throughput.main, plumbing.main, fanout.main, lambda: gallery.main([])]


def main() -> int:
    return max(bench() for bench in BENCHES)


if __name__ == "__main__":
    sys.exit(main())
