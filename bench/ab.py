"""Two checkouts side by side: the plumbing of each, in alternating rounds on one machine.

One `python -m bench.plumbing` run per checkout, one after the other, compares two stretches of
a shared machine whose speed drifts by more than most changes are worth. Here both stacks (the
embedded Postgres and Redis, one API and one no-op worker each) are up at once, and short
throughput rounds alternate between them (each first every other round), so each round of one
has a round of the other a few seconds away. Per round: jobs/s, CPU per job of the API, the
worker, Postgres and Redis, and the latency of one-at-a-time jobs (POST → its result on an open
firehose socket). Medians, and every round's API and worker figure, are printed; nothing is
written to RESULTS.md.

`python -m bench.ab PATH_A PATH_B [--rounds N] [--jobs N]`, each path a checkout (e.g. a
`git worktree add ../before <commit>`); the bench code is this checkout's, the served code each
path's own. Used for the A/B tables in bench/RESULTS.md (the hot path).
"""

import argparse
import asyncio
import contextlib
import os
import statistics
from pathlib import Path

from bench.harness import Stack, stack
from bench.plumbing import latency_on_firehose, lookout_round
from bench.profiling import CpuMeter

MEASURES = ("jobs/s", "API", "worker", "Postgres", "Redis")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("checkouts", nargs=2, type=Path, help="two checkouts to compare")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each")
    parser.add_argument("--jobs", type=int, default=400, help="jobs a throughput round")
    args = parser.parse_args()
    trees = [path.resolve() for path in args.checkouts]
    figures: dict[Path, dict[str, list[float]]] = {
        tree: {name: [] for name in (*MEASURES, "latency")} for tree in trees
    }
    with contextlib.ExitStack() as stacks:
        running: dict[Path, Stack] = {}
        for tree in trees:
            # `python -m app.cli` imports from the working directory first: each stack serves
            # its own checkout's code.
            os.chdir(tree)
            running[tree] = stacks.enter_context(
                stack(
                    worker_command=["-m", "bench.noop_worker"], extra_env={"PYTHONPATH": str(tree)}
                )
            )
        for tree, served in running.items():
            lookout_round(served, 200, 32, f"warm-up, {tree.name}")
        for round_number in range(1, args.rounds + 1):
            # Each checkout goes first every other round: two runs on 2026-12-06 measured
            # whichever went first with ~20% more API CPU a job, the same code either way.
            order = list(running.items())
            for tree, served in order if round_number % 2 else order[::-1]:
                api, worker = (process.pid for process in served.processes[:2])
                pids = {"API": api, "worker": worker, "Redis": served.redis_pid}
                if served.postgres_pid is not None:
                    pids["Postgres"] = served.postgres_pid
                meter = CpuMeter(pids)
                meter.start()
                rate = lookout_round(served, args.jobs, 32, f"{tree.name}, round {round_number}")
                meter.stop()
                figures[tree]["jobs/s"].append(rate)
                for name, ms in meter.ms_per(args.jobs).items():
                    figures[tree][name].append(ms)
                figures[tree]["latency"].extend(
                    asyncio.run(latency_on_firehose(served.base_url, served.ws_url, 50))["lean"]
                )
    for tree, measured in figures.items():
        medians = ", ".join(
            f"{name} {statistics.median(measured[name]):.2f}" for name in MEASURES if measured[name]
        )
        print(
            f"{tree}: {medians} (CPU ms a job); latency p50 "
            f"{1000 * statistics.median(measured['latency']):.1f} ms; API each round "
            f"{[round(v, 2) for v in measured['API']]}, worker {[round(v, 2) for v in measured['worker']]}"
        )


if __name__ == "__main__":
    main()
