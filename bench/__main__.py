"""`python -m bench` (make bench): run each benchmark below, in order. Add new ones here.

Each writes its own section of bench/RESULTS.md, with its plot beside it. Environment:
LOOKOUT_BENCH_PROVIDERS (onnxruntime providers, e.g. CUDAExecutionProvider,CPUExecutionProvider
on a GPU machine), LOOKOUT_BENCH_GALLERY_MAX (largest gallery; 1000000 adds the 1M row),
LOOKOUT_BENCH_OUT (write RESULTS.md and the plots elsewhere, for a trial run),
LOOKOUT_BENCH_CLUSTER_FACES (synthetic unknown faces the clustering pass runs over; 100,000),
LOOKOUT_BENCH_KEPT_JOBS (finished jobs in the table of bench/kept_jobs.py; 1,000,000),
LOOKOUT_BENCH_PEOPLE_FACES (unknown faces behind bench/people_page.py's pages; 1,000,000).
"""

import sys

from bench import (
    clusters,
    deepstack,
    events_out,
    fanout,
    gallery,
    kept_jobs,
    models,
    people_import,
    people_page,
    plumbing,
    throughput,
)

BENCHES = [
    models.main,
    throughput.main,
    plumbing.main,
    kept_jobs.main,
    people_page.main,
    fanout.main,
    gallery.main,
    people_import.main,
    deepstack.main,
    clusters.main,
    events_out.main,
]


def main() -> int:
    return max(bench([]) for bench in BENCHES)


if __name__ == "__main__":
    sys.exit(main())
