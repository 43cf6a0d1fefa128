"""QR codes made with OpenCV's encoder (text) and segno (bytes), pasted into real photos, read back
by the QR detector."""

import numpy as np

from app.pixels import decode_image
from tests.conftest import shared_image
from tests.images import qr_code


def photo(relative: str) -> np.ndarray:
    return decode_image(
        shared_image(relative), max_pixels=50_000_000, target_side_px=2048
    ).pixels.copy()


def paste(image: np.ndarray, patch: np.ndarray, x: int, y: int) -> tuple[int, int, int, int]:
    image[y : y + patch.shape[0], x : x + patch.shape[1]] = patch
    return x, y, x + patch.shape[1], y + patch.shape[0]


def test_a_pasted_code_decodes_to_the_same_payload_with_its_corners(detectors):
    payload = "https://lookout.example/cam/7?frame=42&note=héllo"
    image = photo("scenes/t1.jpg")
    px1, py1, px2, py2 = paste(image, qr_code(payload, module_px=6), 480, 60)
    [found] = detectors["qr"].detect([image])
    assert len(found) == 1
    [code] = found
    assert code.kind == "qr" and code.attributes == {"payload": payload}
    assert len(code.landmarks) == 4
    # The corners lie on the code, inside the pasted patch (which includes the quiet zone).
    assert all(px1 <= x <= px2 and py1 <= y <= py2 for x, y in code.landmarks)
    x1, _, x2, _ = code.box
    assert (x2 - x1) > 0.5 * (px2 - px1)


def test_every_code_in_the_image_is_found(detectors):
    image = photo("scenes/dog.jpg")
    paste(image, qr_code("first code", module_px=6), 20, 20)
    paste(image, qr_code("second code", module_px=5), 560, 360)
    [found] = detectors["qr"].detect([image])
    assert sorted(d.attributes["payload"] for d in found) == ["first code", "second code"]


def test_a_photo_without_codes_has_none(detectors):
    assert detectors["qr"].detect([photo("scenes/t1.jpg"), photo("scenes/dog.jpg")]) == [[], []]


def test_a_code_of_bytes_that_are_not_text_is_read_not_dropped(detectors):
    # QR byte mode carries any bytes; OpenCV reads them as UTF-8 or, failing that, ISO 8859-1
    # (the standard's default). Its text API then ended a payload at a NUL (this code came back
    # empty, so it was dropped as undecoded), or raised UnicodeDecodeError on bytes it took for
    # UTF-8 and Python does not (an encoded surrogate), which failed the image's whole job.
    image = photo("scenes/t1.jpg")
    paste(image, qr_code(b"\x00\x01binary\xff", module_px=6), 480, 60)
    paste(image, qr_code(b"\xed\xa0\x80 surrogate", module_px=6), 20, 450)
    [found] = detectors["qr"].detect([image])
    # What cannot be text (Postgres stores no NUL in text or JSON) reads U+FFFD, the rest as is.
    assert sorted(code.attributes["payload"] for code in found) == [
        "\ufffd\x01binaryÿ",  # U+0001 is text (JSON escapes it)
        "\ufffd\ufffd\ufffd surrogate",
    ]


def test_a_nul_inside_a_code_no_longer_cuts_its_payload_short(detectors):
    # OpenCV's text API ended the payload at the NUL: "hello", the rest silently dropped.
    image = photo("scenes/dog.jpg")
    paste(image, qr_code(b"hello\x00world", module_px=6), 20, 20)
    [[code]] = detectors["qr"].detect([image])
    assert code.attributes == {"payload": "hello\ufffdworld"}
