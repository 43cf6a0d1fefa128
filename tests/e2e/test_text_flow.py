"""tasks=text and tasks=plates, upload to result: the API, the stream, a real worker with the real
PP-OCR and YOLOX models, Postgres, and /v1/stats counting plates."""

from pathlib import Path

import cv2
import numpy as np
import skimage

from tests.conftest import SHARED_IMAGES
from tests.images import PLATE_READ, blank, dog_with_plate_jpeg

PAGE = (Path(skimage.__file__).parent / "data" / "page.png").read_bytes()


async def run_job(client, make_consumer, image: bytes, tasks: str, name: str = "image.png"):  # type: ignore[no-untyped-def]
    response = await client.post(
        "/v1/images", files={"image": (name, image)}, data={"tasks": tasks}
    )
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued["text"] is None  # not read yet
    assert await make_consumer().run(burst=True) == 1
    detail = (await client.get(f"/v1/jobs/{queued['id']}")).json()
    assert detail["status"] == "done", detail
    return detail


async def test_the_page_job_has_its_regions_in_reading_order_and_the_full_text(
    client, make_consumer
):
    job = await run_job(client, make_consumer, PAGE, "text")
    lines = job["text"].split("\n")
    assert lines[0] == "Region-based segmentation"
    assert "markers of the coins" in lines[1] and len(lines) >= 5
    regions = job["detections"]
    assert [r["kind"] for r in regions] == ["text"] * len(regions)
    assert regions[0]["attributes"] == {"text": "Region-based segmentation", "line": 0}
    assert [r["attributes"]["line"] for r in regions] == sorted(
        r["attributes"]["line"] for r in regions
    )
    assert all(len(r["landmarks"]) == 4 and 0.5 <= r["score"] <= 1 for r in regions)
    assert job["counts"] == {"text": len(regions)}
    processed = await client.get(job["links"]["processed_image"])
    drawn = cv2.imdecode(np.frombuffer(processed.content, np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imdecode(np.frombuffer(PAGE, np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape == original.shape and not np.array_equal(drawn, original)


async def test_an_image_without_text_is_an_empty_result_not_an_error(client, make_consumer):
    job = await run_job(client, make_consumer, blank(320, 240), "text,plates")
    assert job["text"] == ""
    assert job["detections"] == [] and job["counts"] == {}


async def test_a_plate_is_read_on_the_vehicle_and_counted_per_plate_in_stats(client, make_consumer):
    image = dog_with_plate_jpeg(SHARED_IMAGES)
    job = await run_job(client, make_consumer, image, "plates", "dog.jpg")
    [plate] = job["detections"]
    assert plate["kind"] == "plate" and plate["attributes"]["plate"] == PLATE_READ
    assert plate["attributes"]["vehicle"]["label"] in {"car", "truck"}
    assert len(plate["landmarks"]) == 4
    assert job["counts"] == {f"plate:{PLATE_READ}": 1}
    assert job["text"] is None  # the job did not ask for `text`

    await run_job(client, make_consumer, image, "plates,objects", "dog.jpg")
    stats = (await client.get("/v1/stats/counts", params={"bucket": "1d"})).json()
    assert stats["totals"][f"plate:{PLATE_READ}"] == 2
    assert stats["totals"]["dog"] == 1
