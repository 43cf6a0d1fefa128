"""Upload → worker → Postgres → API with every task, the real models and the real photos."""

import io

import cv2
import numpy as np
from PIL import Image
from sqlalchemy import text

from tests.conftest import shared_image
from tests.images import qr_code

T1 = shared_image("scenes/t1.jpg")
DOG = shared_image("scenes/dog.jpg")


async def upload(client, data: bytes, tasks: str | None, name: str = "image.jpg") -> dict:
    form = {"tasks": tasks} if tasks is not None else {}
    response = await client.post("/v1/images", files={"image": (name, data)}, data=form)
    assert response.status_code == 202, response.text
    return response.json()


async def test_t1_with_all_tasks_counts_faces_and_persons_and_stores_embeddings(
    client, make_consumer, engine
):
    job = await upload(client, T1, "faces,objects,qr")
    assert job["tasks"] == ["faces", "objects", "qr"]
    await make_consumer().run(burst=True)
    detail = (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert detail["status"] == "done"
    counts = detail["counts"]
    assert counts["face"] == 6 and counts["person"] >= 5 and "qr" not in counts
    faces = [d for d in detail["detections"] if d["kind"] == "face"]
    assert len(faces) == 6
    for face in faces:
        x1, y1, x2, y2 = face["box"]
        assert len(face["landmarks"]) == 5
        assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face["landmarks"])
        assert face["attributes"]["embedding_model"] == "mobilefacenet"
    persons = [d for d in detail["detections"] if d["label"] == "person"]
    assert len(persons) == counts["person"] and all(d["kind"] == "object" for d in persons)
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT model, dim FROM face_embeddings WHERE job_id = :id"),
                {"id": job["id"]},
            )
        ).all()
    assert rows == [("mobilefacenet", 192)] * 6


async def test_dog_with_all_tasks_has_a_dog_a_bicycle_a_car_or_truck_and_no_face(
    client, make_consumer
):
    job = await upload(client, DOG, "faces,objects,qr")
    await make_consumer().run(burst=True)
    detail = (await client.get(f"/v1/jobs/{job['id']}")).json()
    counts = detail["counts"]
    assert "face" not in counts
    assert counts["dog"] >= 1 and counts["bicycle"] >= 1
    assert counts.get("car", 0) + counts.get("truck", 0) >= 1


async def test_a_qr_code_in_an_upload_comes_back_with_its_payload_and_is_drawn(
    client, make_consumer
):
    image = cv2.imdecode(np.frombuffer(DOG, np.uint8), cv2.IMREAD_COLOR)
    code = cv2.QRCodeEncoder.create().encode("lookout e2e")
    code = cv2.resize(code, None, fx=6, fy=6, interpolation=cv2.INTER_NEAREST)
    code = cv2.copyMakeBorder(code, 24, 24, 24, 24, cv2.BORDER_CONSTANT, value=255)
    image[20 : 20 + code.shape[0], 500 : 500 + code.shape[1]] = code[..., None]
    data = cv2.imencode(".png", image)[1].tobytes()
    job = await upload(client, data, "qr", name="frame.png")
    await make_consumer().run(burst=True)
    detail = (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert detail["counts"] == {"qr": 1}
    [qr] = detail["detections"]
    assert qr["attributes"]["payload"] == "lookout e2e" and len(qr["landmarks"]) == 4
    processed = await client.get(job["links"]["processed_image"])
    drawn = cv2.imdecode(np.frombuffer(processed.content, np.uint8), cv2.IMREAD_COLOR)
    assert not np.array_equal(drawn[: 20 + code.shape[0], 480:], image[: 20 + code.shape[0], 480:])


async def test_a_qr_code_of_bytes_beside_faces_fails_nothing(client, make_consumer):
    # A code whose bytes OpenCV took for UTF-8 and Python does not (an encoded surrogate) made the
    # whole job fail ("processing error: UnicodeDecodeError"), its faces with it.
    data = b"\xed\xa0\x80 not text"
    image = cv2.imdecode(np.frombuffer(T1, np.uint8), cv2.IMREAD_COLOR)
    code = qr_code(data, module_px=6)
    image[20 : 20 + code.shape[0], 500 : 500 + code.shape[1]] = code
    job = await upload(client, cv2.imencode(".png", image)[1].tobytes(), "faces,qr", "t1.png")
    await make_consumer().run(burst=True)
    detail = (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert detail["status"] == "done", detail["error"]
    assert detail["counts"] == {"face": 6, "qr": 1}
    [qr] = [d for d in detail["detections"] if d["kind"] == "qr"]
    assert qr["attributes"]["payload"] == "\ufffd\ufffd\ufffd not text"


async def test_an_exif_rotated_upload_reports_the_upright_size_and_boxes(client, make_consumer):
    upright = Image.open(io.BytesIO(T1))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # view: turn 90° clockwise
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=95, exif=exif)
    job = await upload(client, buffer.getvalue(), "faces")
    assert (job["image"]["width"], job["image"]["height"]) == (1280, 886)
    await make_consumer().run(burst=True)
    detail = (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert detail["counts"] == {"face": 6}
    assert all(
        x2 <= 1280 and y2 <= 886 for _, _, x2, y2 in (d["box"] for d in detail["detections"])
    )


async def test_unknown_tasks_are_refused_with_the_valid_ones_listed(client):
    response = await client.post(
        "/v1/images", files={"image": ("t1.jpg", T1)}, data={"tasks": "faces,cats"}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_request"  # one code, as for a missing field
    assert "cats" in body["detail"] and "faces, objects, qr" in body["detail"]
