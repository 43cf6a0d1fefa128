"""`python -m bench` (make bench): run each benchmark below, in order. Add new ones here.

Each writes its own section of bench/RESULTS.md, with its plot beside it. Environment:
LOOKOUT_BENCH_PROVIDERS (onnxruntime providers, e.g. CUDAExecutionProvider,CPUExecutionProvider
on a GPU machine), LOOKOUT_BENCH_GALLERY_MAX (largest gallery; 1000000 adds the 1M row),
LOOKOUT_BENCH_OUT (write RESULTS.md and the plots elsewhere, for a trial run).
"""

import sys

from bench import deepstack, fanout, gallery, models, plumbing, throughput

BENCHES = [models.main, throughput.main, plumbing.main, fanout.main, gallery.main, deepstack.main]


def main() -> int:
    return max(bench([]) for bench in BENCHES)


if __name__ == "__main__":
    sys.exit(main())
