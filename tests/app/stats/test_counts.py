"""GET /v1/stats/counts: objects per class per UTC time bucket, from jobs.counts."""

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.models import ApiKey, Job, JobPurpose, JobStatus
from app.security import Scope, parse_key

DAY = datetime(2026, 3, 1, tzinfo=UTC)


async def add_job(
    sessionmaker,
    *,
    at: datetime,
    counts: dict[str, int],
    node_id: uuid.UUID | None = None,
    owner_id: uuid.UUID | None = None,
    status: JobStatus = JobStatus.done,
    purpose: JobPurpose = JobPurpose.detect,
) -> None:
    async with sessionmaker.begin() as session:
        session.add(
            Job(
                status=status,
                purpose=purpose,
                tasks=["faces"],
                image_key=None,
                content_type="image/jpeg",
                width=640,
                height=480,
                counts=counts,
                attempts=1,
                node_id=node_id,
                owner_id=owner_id,
                created_at=at,
            )
        )


async def test_counts_add_up_per_class_and_bucket_for_any_labels(client, make_node, sessionmaker):
    node = await make_node()
    other = await make_node("other")
    at = DAY + timedelta(hours=10)
    await add_job(
        sessionmaker, at=at + timedelta(minutes=5), counts={"car": 2, "person": 1}, node_id=node.id
    )
    await add_job(
        sessionmaker, at=at + timedelta(minutes=59), counts={"person": 3}, node_id=node.id
    )
    await add_job(sessionmaker, at=at + timedelta(hours=1), counts={}, node_id=node.id)
    await add_job(
        sessionmaker, at=at + timedelta(hours=2, minutes=1), counts={"face": 6}, node_id=node.id
    )
    # Not counted: another node, a failed job, outside the span.
    await add_job(sessionmaker, at=at, counts={"car": 100}, node_id=other.id)
    await add_job(
        sessionmaker, at=at, counts={"car": 100}, node_id=node.id, status=JobStatus.failed
    )
    await add_job(sessionmaker, at=at + timedelta(hours=5), counts={"car": 100}, node_id=node.id)

    response = await client.get(
        "/v1/stats/counts",
        params={
            "node_id": str(node.id),
            "from": "2026-03-01T10:30:00+00:00",
            "to": "2026-03-01T13:00:00Z",
            "bucket": "1h",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["from"] == "2026-03-01T10:00:00Z"  # the first bucket's start
    assert body["to"] == "2026-03-01T13:00:00Z"
    assert body["bucket_s"] == 3600
    assert [(b["start"], b["end"], b["frames"], b["counts"]) for b in body["buckets"]] == [
        ("2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z", 2, {"car": 2, "person": 4}),
        ("2026-03-01T11:00:00Z", "2026-03-01T12:00:00Z", 1, {}),
        ("2026-03-01T12:00:00Z", "2026-03-01T13:00:00Z", 1, {"face": 6}),
    ]
    assert body["totals"] == {"car": 2, "face": 6, "person": 4}


async def test_times_with_offsets_are_read_in_utc_and_buckets_align_to_utc(client, sessionmaker):
    await add_job(sessionmaker, at=DAY + timedelta(hours=23, minutes=30), counts={"dog": 1})
    response = await client.get(
        "/v1/stats/counts",
        # 2026-03-02T01:00+02:00 is 23:00 UTC on March 1st.
        params={"from": "2026-03-02T01:00:00+02:00", "to": "2026-03-02T02:00:00", "bucket": "1d"},
    )
    body = response.json()
    assert [(b["start"], b["counts"]) for b in body["buckets"]] == [
        ("2026-03-01T00:00:00Z", {"dog": 1}),
    ]
    filled = await client.get(
        "/v1/stats/counts",
        params={
            "from": "2026-03-02T01:00:00+02:00",
            "to": "2026-03-02T02:00:00",
            "bucket": "1d",
            "fill": "true",
        },
    )
    body = filled.json()
    assert [(b["start"], b["counts"]) for b in body["buckets"]] == [
        ("2026-03-01T00:00:00Z", {"dog": 1}),
        ("2026-03-02T00:00:00Z", {}),
    ]
    # A naive `to` is UTC; the last bucket is cut short there.
    assert body["buckets"][-1]["end"] == body["to"] == "2026-03-02T02:00:00Z"


async def test_without_a_node_every_job_counts(client, make_node, sessionmaker):
    node = await make_node()
    now = datetime.now(UTC)
    await add_job(sessionmaker, at=now - timedelta(minutes=1), counts={"face": 2})
    await add_job(sessionmaker, at=now - timedelta(minutes=1), counts={"face": 3}, node_id=node.id)
    body = (await client.get("/v1/stats/counts", params={"bucket": "15m"})).json()
    assert body["node_id"] is None
    assert body["totals"] == {"face": 5}
    assert len(body["buckets"]) == 1  # the empty buckets of the day are left out
    assert body["buckets"][0]["frames"] == 2
    filled = await client.get("/v1/stats/counts", params={"bucket": "15m", "fill": "true"})
    assert len(filled.json()["buckets"]) in (96, 97)  # one day of 15-minute buckets


async def test_gallery_calls_are_not_frames(client, sessionmaker):
    """Issue 12: identify/verify/search jobs counted as frames (`face: 51` from gallery calls).
    Only detection jobs count: uploads, node frames, the detection routes."""
    now = datetime.now(UTC) - timedelta(minutes=1)
    await add_job(sessionmaker, at=now, counts={"face": 1})
    for purpose in (JobPurpose.identify, JobPurpose.compare, JobPurpose.enroll):
        await add_job(sessionmaker, at=now, counts={"face": 5}, purpose=purpose)
    body = (await client.get("/v1/stats/counts", params={"bucket": "1d"})).json()
    assert body["totals"] == {"face": 1}
    assert [b["frames"] for b in body["buckets"]] == [1]


async def test_bad_parameters_get_422_or_404(client):
    cases = {
        "bucket=1x": 422,
        "bucket=30s": 422,
        "bucket=1m&from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z": 422,  # too many buckets
        "from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z": 422,
        "from=yesterday": 422,
        f"node_id={uuid.uuid4()}": 404,
    }
    for query, expected in cases.items():
        response = await client.get(f"/v1/stats/counts?{query}")
        assert response.status_code == expected, (query, response.text)
        assert response.json()["detail"]
        # One code per kind of error, whether FastAPI's validation or the service noticed it.
        assert response.json()["error"] == {422: "invalid_request", 404: "not_found"}[expected]


async def test_a_read_key_counts_every_node_but_only_its_own_uploads(
    client, make_key, make_node, sessionmaker
):
    reader = await make_key("reader", scopes=(Scope.read,))
    other = await make_key("other", scopes=(Scope.read, Scope.write))
    ids = {}
    async with sessionmaker() as session:
        for token in (reader, other):
            prefix, _ = parse_key(token)
            ids[token] = await session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix))
    node = await make_node()
    at = DAY + timedelta(hours=10)
    await add_job(sessionmaker, at=at, counts={"car": 1}, node_id=node.id)
    await add_job(sessionmaker, at=at, counts={"dog": 2}, owner_id=ids[reader])
    await add_job(sessionmaker, at=at, counts={"cat": 4}, owner_id=ids[other])
    span = {"from": "2026-03-01T10:00:00Z", "to": "2026-03-01T11:00:00Z", "bucket": "1h"}

    async def totals(token: str | None) -> dict[str, int]:
        """`None`: the client's own admin key."""
        headers = {"X-API-Key": token} if token is not None else {}
        response = await client.get("/v1/stats/counts", params=span, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()["totals"]

    assert await totals(reader) == {"car": 1, "dog": 2}  # not the other key's cat
    assert await totals(None) == {"car": 1, "cat": 4, "dog": 2}
