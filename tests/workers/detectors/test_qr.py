"""QR codes made with OpenCV's encoder, pasted into real photos, read back by the QR detector."""

import cv2
import numpy as np

from app.pixels import decode_image
from tests.conftest import shared_image


def qr_patch(payload: str, *, module_px: int) -> np.ndarray:
    code = cv2.QRCodeEncoder.create().encode(payload)
    code = cv2.resize(code, None, fx=module_px, fy=module_px, interpolation=cv2.INTER_NEAREST)
    quiet = 4 * module_px  # the quiet zone the standard asks for
    code = cv2.copyMakeBorder(code, quiet, quiet, quiet, quiet, cv2.BORDER_CONSTANT, value=255)
    return cv2.cvtColor(code, cv2.COLOR_GRAY2BGR)


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
    px1, py1, px2, py2 = paste(image, qr_patch(payload, module_px=6), 480, 60)
    [found] = detectors["qr"].detect([image])
    assert len(found) == 1
    [code] = found
    assert code.kind == "qr" and code.attributes["payload"] == payload
    assert len(code.landmarks) == 4
    # The corners lie on the code, inside the pasted patch (which includes the quiet zone).
    assert all(px1 <= x <= px2 and py1 <= y <= py2 for x, y in code.landmarks)
    x1, _, x2, _ = code.box
    assert (x2 - x1) > 0.5 * (px2 - px1)


def test_every_code_in_the_image_is_found(detectors):
    image = photo("scenes/dog.jpg")
    paste(image, qr_patch("first code", module_px=6), 20, 20)
    paste(image, qr_patch("second code", module_px=5), 560, 360)
    [found] = detectors["qr"].detect([image])
    assert sorted(d.attributes["payload"] for d in found) == ["first code", "second code"]


def test_a_photo_without_codes_has_none(detectors):
    assert detectors["qr"].detect([photo("scenes/t1.jpg"), photo("scenes/dog.jpg")]) == [[], []]
