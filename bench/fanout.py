"""Fan-out: N WebSocket subscribers on the firehose; delivery latency from publish to receipt.

Events are published with the same function workers use (streams.publish_job_event); each
carries its publish time (`at`), and every subscriber records receipt time minus `at`.

`python -m bench.fanout [--subscribers N] [--events N]`.
"""

import argparse
import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
import websockets
from redis.asyncio import Redis
from tqdm import tqdm

from app import streams
from bench.harness import (
    CORES,
    Target,
    load_average,
    machine,
    percentile_ms,
    save_plot,
    stack,
    write_section,
)

P99 = Target("≤ 100 ms", 100, at_least=False)


@dataclass
class FanoutResult:
    subscribers: int
    events: int
    interval_s: float
    delivered: int
    p50_ms: float
    p99_ms: float
    latencies_s: list[float] = field(repr=False)


async def _measure(
    ws_url: str, redis_url: str, subscribers: int, events: int, interval_s: float
) -> FanoutResult:
    import json
    import uuid

    latencies: list[float] = []
    expected = subscribers * events
    progress = tqdm(total=expected, desc=f"fan-out to {subscribers}", unit="msg")

    async def subscriber(ready: asyncio.Event, connected: list[int]) -> None:
        async with websockets.connect(f"{ws_url}/v1/ws", max_queue=None) as ws:
            connected.append(1)
            if len(connected) == subscribers:
                ready.set()
            for _ in range(events):
                raw = await ws.recv()
                latencies.append(time.time() - json.loads(raw)["sent"])
                progress.update()

    ready, connected = asyncio.Event(), []
    tasks = []
    for _ in range(subscribers):
        tasks.append(asyncio.create_task(subscriber(ready, connected)))
        await asyncio.sleep(0.001)  # do not SYN-flood our own server
    await asyncio.wait_for(ready.wait(), timeout=120)
    await asyncio.sleep(1.0)  # every handler is now reading
    redis = Redis.from_url(redis_url)
    for _ in range(events):
        await streams.publish_job_event(
            redis,
            # `sent`: the bench's own clock (the event's `at` is RFC 3339 text, to the ms).
            streams.make_event("result", uuid.uuid4(), job={}, sent=time.time()),
            ttl_s=60,
            firehose_maxlen=10_000,
        )
        await asyncio.sleep(interval_s)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    progress.close()
    await redis.aclose()
    return FanoutResult(
        subscribers,
        events,
        interval_s,
        len(latencies),
        percentile_ms(latencies, 50),
        percentile_ms(latencies, 99),
        latencies,
    )


def run(*, subscribers: int = 1000, events: int = 20, interval_s: float = 0.1) -> FanoutResult:
    with stack(worker_command=["-m", "bench.noop_worker"]) as running:
        return asyncio.run(
            _measure(
                running.ws_url, running.env["LOOKOUT_REDIS__URL"], subscribers, events, interval_s
            )
        )


def report(result: FanoutResult, load_before: str, measured: str) -> None:
    expected = result.subscribers * result.events
    plot = save_plot("fanout", "Fan-out: firehose delivery latency", lambda f: _draw(f, result))
    write_section(
        "fanout",
        "\n".join(
            [
                "## Fan-out: firehose subscribers (bench/fanout.py)",
                "",
                f"Measured {measured}. {result.subscribers} WebSocket clients on `/v1/ws` (one",
                f"API process; one Redis reader fanned out in-process), {result.events} events",
                f"published {result.interval_s * 1000:.0f} ms apart with the workers' own publish",
                "function; delivery = receipt time minus the event's publish time. The clients run",
                f"in one Python process on the same {CORES} cores, so their own scheduling is part",
                "of the figure.",
                "",
                *machine(),
                f"- Load average before {load_before}, after {load_average()}",
                "",
                "| measurement | value | target |",
                "|---|---:|---|",
                f"| messages delivered | {result.delivered} of {expected} | all: "
                f"{'met' if result.delivered == expected else '**missed**'} |",
                f"| delivery p50 | {result.p50_ms:.1f} ms | |",
                f"| delivery p99 | {result.p99_ms:.1f} ms | {P99.cell(result.p99_ms)} |",
                "",
                plot,
            ]
        ),
    )


def _draw(figure, result: FanoutResult) -> None:  # type: ignore[no-untyped-def]
    axis = figure.add_subplot()
    ms = np.sort(np.asarray(result.latencies_s) * 1000)
    axis.plot(ms, np.arange(1, len(ms) + 1) / len(ms))
    axis.axvline(P99.threshold, color="grey", linestyle=":", linewidth=1)
    axis.text(P99.threshold, 0.02, " p99 target", fontsize=7, color="grey")
    axis.set_xlabel(f"publish → receipt, ms ({result.subscribers} subscribers)")
    axis.set_ylabel("share of messages")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20)
    args = parser.parse_args(argv)
    measured = time.strftime("%Y-%m-%d %H:%M %Z")
    load_before = load_average()
    result = run(subscribers=args.subscribers, events=args.events)
    report(result, load_before, measured)
    print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
