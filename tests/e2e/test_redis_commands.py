"""Redis commands per job, as Redis counts them (INFO commandstats deltas): the upload's
enqueue in the API, then one batch through the worker (take, mark running, results, events,
acks).

Fewer commands per job is CPU on Redis, on the API and on the worker: at a few hundred jobs/s
the plumbing, not the model, sets the pace (bench/plumbing.py counts the same under load).
"""

import pytest

from app import streams
from tests.conftest import serve_app
from tests.images import blank

PNG = blank(64, 48, ".png")
BATCH = 8


async def command_calls(redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}
    return {name: n for name, n in calls.items() if not name.startswith(("info", "config"))}


@pytest.mark.parametrize("running_after_ms", [0, 60_000])
async def test_a_batch_of_uploads_costs_few_redis_commands_per_job(
    settings, make_consumer, redis, running_after_ms
):
    """running_after_ms 0: the batch is marked running first; a minute: never (the product's
    deferred mark, for a batch that ends sooner), which saves each job's running XADD+EXPIRE."""
    open_api = settings.model_copy(
        update={"auth": settings.auth.model_copy(update={"enabled": False})}
    )
    await streams.ensure_group(redis)
    async with serve_app(open_api) as client:
        await redis.config_resetstat()
        for _ in range(BATCH):
            response = await client.post("/v1/images", files={"image": ("t.png", PNG, "image/png")})
            assert response.status_code == 202, response.text
        api = await command_calls(redis)

    # The worker's steps for one batch, without its timers (heartbeat, stale-entry scan).
    consumer = make_consumer(batch_size=BATCH, running_after_ms=running_after_ms)
    await redis.config_resetstat()
    entries = await consumer.next_entries(block_ms=1000)
    assert len(entries) == BATCH
    work = await consumer.prepare(entries)
    await consumer.complete(work, await consumer.infer(work))
    worker = await command_calls(redis)
    assert (await redis.xpending(streams.JOBS, streams.GROUP))["pending"] == 0
    results = [e for _, e in await streams.read_firehose(redis, after=b"0", block_ms=1)]
    assert [e["type"] if e else None for e in results] == ["result"] * BATCH

    per_job = (sum(api.values()) + sum(worker.values())) / BATCH
    report = f"API {api}, worker {worker}, {per_job} per job"
    print(report)
    # The upload: one EVALSHA running XADD (the message) and SET (its entry marker); an EVAL
    # once, the first time the server sees the script. Nothing on the job's own stream: its
    # `queued` event is its row.
    assert sum(api.values()) <= 3 * BATCH + 1, report
    # Each job: XADD of its result and final status as one entry, XADD result to the firehose,
    # EXPIRE of its stream; with the running mark also XADD running and EXPIRE.
    # Each batch: XAUTOCLAIM, XREADGROUP, one XACK and one DEL (after the events, in the same
    # pipeline: no MULTI/EXEC).
    marked = running_after_ms == 0
    assert sum(worker.values()) <= (5 if marked else 3) * BATCH + 4, report
    assert per_job <= (9 if marked else 7), report
