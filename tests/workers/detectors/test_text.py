"""Text and plates on real photographs, with the real PP-OCR models from the rapidocr wheel (and
Debian's tesseract for the alternative engine).

page.png is scikit-image's photographed book page (uneven light, dark on the left); the plate is
rendered with PIL and warped in perspective onto the pickup in dog.jpg (tests/images.py).
"""

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage

from app.drawing import processed_jpeg
from app.pixels import decode_image
from tests.conftest import SHARED_IMAGES, shared_image
from tests.images import PLATE_CORNERS_ON_DOG, PLATE_TEXT, dog_with_plate, plate_on_vehicle
from workers.detectors.onnx import RuntimeOptions
from workers.detectors.registry import build_detectors, build_text_engine
from workers.detectors.text import (
    PlateDetector,
    PlateDetectorConfig,
    TesseractConfig,
    TesseractEngine,
    TextDetector,
    TextEngineUnavailable,
    TextRegion,
    ctc_decode,
    normalize_plate,
    reading_order,
    unclip_rect,
)
from workers.pipeline import run_pipeline

VEHICLES = {"car", "truck", "bus", "motorcycle"}

PAGE = Path(skimage.__file__).parent / "data" / "page.png"


def page() -> np.ndarray:
    return decode_image(PAGE.read_bytes(), max_pixels=10**8, target_side_px=2048).pixels.copy()


def photo(relative: str) -> np.ndarray:
    return decode_image(shared_image(relative), max_pixels=10**8, target_side_px=2048).pixels.copy()


def lines_of(detections) -> list[str]:
    lines: dict[int, list[str]] = {}
    for d in detections:
        lines.setdefault(d.attributes["line"], []).append(d.attributes["text"])
    return [" ".join(lines[n]) for n in sorted(lines)]


def inside(point, polygon, margin_px: float = 0) -> bool:
    contour = np.array(polygon, np.float32).reshape(-1, 1, 2)
    return cv2.pointPolygonTest(contour, (float(point[0]), float(point[1])), True) >= -margin_px


# --- PP-OCR (the default engine) ---------------------------------------------------------------


def test_the_page_reads_region_based_segmentation_in_its_first_line(detectors):
    [found] = detectors["text"].detect([page()])
    lines = lines_of(found)
    assert lines[0] == "Region-based segmentation"
    assert len(lines) >= 5
    assert "markers of the coins" in lines[1]
    height, width = page().shape[:2]
    for d in found:
        assert d.kind == "text" and 0.5 <= d.score <= 1
        assert len(d.landmarks) == 4
        assert all(0 <= x <= width and 0 <= y <= height for x, y in d.landmarks)
        (tlx, tly), (trx, _), (_, bry), _ = d.landmarks
        assert tlx < trx and tly < bry  # top-left, top-right, bottom-right, bottom-left
        x1, _, _, y2 = d.box
        assert x1 == min(x for x, _ in d.landmarks) and y2 == max(y for _, y in d.landmarks)
    # Reading order: lines go down the page.
    tops = [d.box[1] for d in found]
    line_numbers = [d.attributes["line"] for d in found]
    assert line_numbers == sorted(line_numbers)
    first_of_line = [tops[line_numbers.index(n)] for n in sorted(set(line_numbers))]
    assert first_of_line == sorted(first_of_line)


def test_an_upside_down_page_is_turned_by_the_angle_classifier(detectors):
    upside_down = np.ascontiguousarray(cv2.rotate(page(), cv2.ROTATE_180))
    [found] = detectors["text"].detect([upside_down])
    texts = [d.attributes["text"] for d in found]
    # Without the classifier these lines come out as upside-down gibberish.
    assert "Let us first determine markers of the coins and the" in texts
    assert "unambiguously as either object or background.Here," in texts


def test_images_without_text_give_no_regions(detectors):
    rng = np.random.default_rng(7)
    images = [
        np.full((480, 640, 3), 200, np.uint8),
        rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
        np.zeros((1, 1, 3), np.uint8),
        np.zeros((3, 900, 3), np.uint8),
        photo("scenes/t1.jpg"),
    ]
    assert detectors["text"].detect(images) == [[], [], [], [], []]


def test_a_batch_reads_each_image_on_its_own(detectors):
    blank = np.full((100, 200, 3), 255, np.uint8)
    first, empty, again = detectors["text"].detect([page(), blank, page()])
    assert empty == []
    assert lines_of(first) == lines_of(again)


def test_text_regions_are_counted_and_drawn_as_polygons(detectors):
    data = PAGE.read_bytes()
    result = run_pipeline(data, ["text"], detectors, max_pixels=10**8)
    assert result.counts == {"text": len(result.detections)}
    plain = run_pipeline(data, ["qr"], detectors, max_pixels=10**8)
    drawn, untouched = (
        cv2.imdecode(
            np.frombuffer(
                processed_jpeg(data, found.detections, max_pixels=10**8, target_side_px=2048),
                np.uint8,
            ),
            cv2.IMREAD_COLOR,
        )
        for found in (result, plain)
    )
    # The region colour (BGR 180, 60, 240) appears only where something was drawn.
    magenta = (np.abs(drawn.astype(int) - (180, 60, 240)).sum(axis=2) < 60).sum()
    assert magenta > 500
    assert (np.abs(untouched.astype(int) - (180, 60, 240)).sum(axis=2) < 60).sum() < 20


# --- plates --------------------------------------------------------------------------------------


def test_a_plate_on_a_vehicle_is_read_with_its_polygon_and_vehicle(detectors):
    [plates] = detectors["plates"].detect([dog_with_plate(SHARED_IMAGES)])
    assert [p.attributes["plate"] for p in plates] == ["KX51RTA"]
    [plate] = plates
    assert plate.kind == "plate" and plate.score > 0.8
    # The polygon lies on the composited plate, in scene pixels.
    assert all(inside(point, PLATE_CORNERS_ON_DOG, margin_px=3) for point in plate.landmarks)
    vehicle = plate.attributes["vehicle"]
    assert vehicle["label"] in {"car", "truck"}
    vx1, vy1, vx2, vy2 = vehicle["box"]
    assert vx1 < 612 and vy1 < 131 and vx2 > 640 and vy2 > 152


def test_no_vehicle_no_plate_and_the_pattern_decides(detectors, settings):
    # The same plate on the grass, far from any vehicle, is not read as a plate.
    grass = plate_on_vehicle(
        photo("scenes/dog.jpg"), PLATE_TEXT, [(420, 470), (560, 470), (560, 510), (420, 510)]
    )
    [on_grass] = detectors["text"].detect([grass])
    assert "KX51RTA" in [d.attributes["text"].replace(" ", "") for d in on_grass]  # readable
    assert detectors["plates"].detect([grass, photo("scenes/t1.jpg")]) == [[], []]
    # A pattern that asks for 8 characters rejects the 7 of this plate.
    strict = PlateDetector(
        PlateDetectorConfig(pattern=r"[A-Z0-9]{8}"),
        vehicles=detectors["objects"],
        engine=detectors["text"].engine,
    )
    assert strict.detect([dog_with_plate(SHARED_IMAGES)]) == [[]]
    with pytest.raises(ValueError, match="not a regular expression"):
        PlateDetectorConfig(pattern="([A-Z")


def test_plates_count_per_plate(detectors):
    data = cv2.imencode(".jpg", dog_with_plate(SHARED_IMAGES), [cv2.IMWRITE_JPEG_QUALITY, 95])[
        1
    ].tobytes()
    result = run_pipeline(data, ["objects", "plates"], detectors, max_pixels=10**8)
    assert result.counts["plate:KX51RTA"] == 1
    assert {"car", "dog", "bicycle"} <= set(result.counts)


# --- pieces ---------------------------------------------------------------------------------------


def test_unclip_grows_a_rectangle_by_area_times_ratio_over_perimeter_on_every_side():
    center, (w, h), angle = unclip_rect(((50.0, 20.0), (100.0, 10.0), 30.0), 1.6)
    offset = 100 * 10 * 1.6 / 220
    assert center == (50.0, 20.0) and angle == 30.0
    assert w == pytest.approx(100 + 2 * offset) and h == pytest.approx(10 + 2 * offset)


def test_ctc_merges_repeats_and_drops_blanks():
    characters = ["", "a", "b", " "]
    steps = [1, 1, 0, 1, 2, 2, 0, 0, 3, 2]  # a a _ a b b _ _ ␣ b → "aab b"
    probabilities = np.full((1, len(steps), 4), 0.01, np.float32)
    for t, index in enumerate(steps):
        probabilities[0, t, index] = 0.9
    [(text, score)] = ctc_decode(probabilities, characters)
    assert text == "aab b" and score == pytest.approx(0.9)
    assert ctc_decode(np.zeros((1, 5, 4), np.float32) + np.eye(4)[0], characters) == [("", 0.0)]


def test_reading_order_groups_lines_top_to_bottom_and_left_to_right():
    def region(text, x, y, w=40, h=10):
        return TextRegion(text, 0.9, ((x, y), (x + w, y), (x + w, y + h), (x, y + h)))

    regions = [region("d", 10, 31), region("b", 60, 2), region("c", 60, 30), region("a", 5, 0)]
    assert [[r.text for r in line] for line in reading_order(regions)] == [["a", "b"], ["d", "c"]]


# --- Tesseract, the alternative engine ------------------------------------------------------------


def test_tesseract_reads_the_page_behind_the_same_interface(settings):
    text = settings.text.model_copy(update={"engine": "tesseract"})
    engine = build_text_engine(settings.model_copy(update={"text": text}), RuntimeOptions())
    assert isinstance(engine, TesseractEngine)
    [found] = TextDetector(engine).detect([page()])
    lines = lines_of(found)
    assert lines[0] == "Region-based segmentation"
    assert "markers of the coins" in lines[1]
    assert all(len(d.landmarks) == 4 and 0 < d.score <= 1 for d in found)
    assert TextDetector(engine).detect([np.full((200, 300, 3), 230, np.uint8)]) == [[]]


def test_tesseract_selected_but_missing_stops_the_worker_at_start(settings):
    text = settings.text.model_copy(
        update={"engine": "tesseract", "tesseract_command": "no-such-tesseract"}
    )
    with pytest.raises(TextEngineUnavailable, match=r"apt-get install tesseract-ocr"):
        build_detectors(settings.model_copy(update={"text": text}))


def test_tesseract_without_the_language_data_says_which_package_to_install():
    with pytest.raises(TextEngineUnavailable, match=r"tesseract-ocr-klingon"):
        TesseractEngine(TesseractConfig(languages="eng+klingon"))


def test_tesseract_tsv_lines_become_regions():
    tsv = "\n".join(
        [
            "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext",
            "4\t1\t1\t1\t1\t0\t10\t20\t200\t30\t-1\t",
            "5\t1\t1\t1\t1\t1\t10\t20\t80\t30\t96.5\tHello",
            "5\t1\t1\t1\t1\t2\t100\t22\t110\t28\t91.5\tworld",
            "5\t1\t1\t1\t2\t1\t10\t60\t80\t30\t20\tnoise",
        ]
    )
    [region] = _parser().parse_tsv(tsv, scale=2)
    assert region.text == "Hello world" and region.score == pytest.approx(0.94)
    assert region.polygon == ((5, 10), (105, 10), (105, 25), (5, 25))


def _parser() -> TesseractEngine:
    """An engine for its parser alone: no binary needed."""
    engine = TesseractEngine.__new__(TesseractEngine)
    engine.config = TesseractConfig()
    return engine


def test_plate_normalisation_and_default_pattern():
    pattern = re.compile(PlateDetectorConfig().pattern)
    assert pattern.fullmatch("KX51RTA") and pattern.fullmatch("1234")
    assert not pattern.fullmatch("TOYOTA") and not pattern.fullmatch("A1")


def test_a_plate_camera_s_close_up_is_read_without_a_vehicle(detectors):
    """A close-up (what a plate camera, and so Blue Iris's ALPR, sends) shows the plate, not the
    car YOLOX needs to find: nothing was read. With no vehicle found the whole image is read;
    the plate's `vehicle` is null."""
    scene = dog_with_plate(SHARED_IMAGES)
    close_up = cv2.resize(scene[110:180, 580:720], None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    assert not [v for v in detectors["objects"].detect([close_up])[0] if v.label in VEHICLES]
    [plates] = detectors["plates"].detect([close_up])
    assert [(p.attributes["plate"], p.attributes["vehicle"]) for p in plates] == [("KX51RTA", None)]
    off = PlateDetector(
        PlateDetectorConfig(whole_image_without_vehicle=False),
        vehicles=detectors["objects"],
        engine=detectors["text"].engine,
    )
    assert off.detect([close_up]) == [[]]


def test_an_objects_filter_without_vehicles_leaves_plates_reading(settings):
    """LOOKOUT_OBJECTS__CLASSES=["person","dog"] filtered the plates task's vehicles too: every
    plate was silently missed. The objects task keeps its filter; plates sees vehicles."""
    objects = settings.objects.model_copy(update={"classes": ["person", "dog"]})
    built = build_detectors(settings.model_copy(update={"objects": objects}))
    scene = dog_with_plate(SHARED_IMAGES)
    assert {d.label for d in built["objects"].detect([scene])[0]} <= {"person", "dog"}
    [plates] = built["plates"].detect([scene])
    assert [p.attributes["plate"] for p in plates] == ["KX51RTA"]
    assert plates[0].attributes["vehicle"]["label"] in VEHICLES


def test_plates_keep_the_letters_of_every_script():
    """Letters outside A-Z were removed: 京A·12345 became A12345, MÜ-AB 123 MAB123."""
    pattern = re.compile(PlateDetectorConfig().pattern)
    for read, plate in (
        ("京A·12345", "京A12345"),
        ("12가 3456", "12가3456"),
        ("MÜ-AB 123", "MÜAB123"),
        ("kx51 rta", "KX51RTA"),
    ):
        assert normalize_plate(read) == plate
        assert pattern.fullmatch(plate), plate
    assert not pattern.fullmatch(normalize_plate("Toyota")) and not pattern.fullmatch("A_12")


def test_tesseract_takes_language_data_from_tessdata_prefix(tmp_path, monkeypatch):
    """The engine ran tesseract with an environment of OMP_THREAD_LIMIT alone: language data of
    one's own (TESSDATA_PREFIX) was not found, and the refusal listed the header's words."""
    installed = next(Path("/usr/share/tesseract-ocr").glob("*/tessdata/eng.traineddata"))
    (tmp_path / "custom.traineddata").write_bytes(installed.read_bytes())
    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path))
    engine = TesseractEngine(TesseractConfig(languages="custom"))
    assert engine.model_name == "tesseract-custom"
    monkeypatch.delenv("TESSDATA_PREFIX")
    with pytest.raises(TextEngineUnavailable) as refused:
        TesseractEngine(TesseractConfig(languages="klingon"))
    assert "(it has eng, osd)" in str(refused.value)


def test_a_plate_of_two_lines_is_read_as_one(detectors):
    """A two-line plate (AB12 over CDE: motorcycles, many rear plates) was two regions matched
    alone: the plate came back as AB12, CDE dropped. Stacked lines of one height are one plate."""
    corners = [(606, 112), (676, 109), (678, 158), (608, 162)]
    scene = plate_on_vehicle(
        photo("scenes/dog.jpg"), "AB12\nCDE", corners, size=(300, 220), font_px=90
    )
    [plates] = detectors["plates"].detect([scene])
    assert [p.attributes["plate"] for p in plates] == ["AB12CDE"]
    x1, y1, x2, y2 = plates[0].box
    assert x1 > 600 and y1 > 105 and x2 < 685 and y2 < 166  # on the plate, around both lines
    assert plates[0].attributes["vehicle"]["label"] in VEHICLES


def test_only_lines_of_one_height_stacked_across_join():
    """A dealer's line under a plate (smaller) or text beside it is not joined to it."""
    plates = PlateDetector.__new__(PlateDetector)
    plates.pattern = re.compile(PlateDetectorConfig().pattern)

    def region(text: str, x1: int, y1: int, x2: int, y2: int) -> TextRegion:
        return TextRegion(text, 0.9, ((x1, y1), (x2, y1), (x2, y2), (x1, y2)))

    def read(*regions: TextRegion) -> list[str]:
        return [plate for _, plate in plates._plate_strings(regions)]

    assert read(region("AB12", 10, 10, 60, 30), region("CDE", 15, 32, 55, 52)) == ["AB12CDE"]
    # The dealer's name below, half the height: the plate alone.
    assert read(region("AB123", 10, 10, 90, 30), region("FORD", 20, 32, 60, 42)) == ["AB123"]
    # Side by side (no overlap across): each on its own.
    assert read(region("AB12", 10, 10, 60, 30), region("XY34", 200, 32, 250, 52)) == [
        "AB12",
        "XY34",
    ]


@pytest.mark.parametrize("degrees", [8, -8])
def test_a_tilted_page_keeps_its_lines_apart_and_in_order(detectors, degrees):
    """Lines were grouped by their boxes as the page lies: a line 8° off level is as tall as
    three, took its neighbours in, and the heading came out third. Grouped along the text's
    own direction, each line stays one line, top to bottom."""
    padded = cv2.copyMakeBorder(page(), 60, 60, 60, 60, cv2.BORDER_CONSTANT, value=(255, 255, 255))
    height, width = padded.shape[:2]
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    tilted = cv2.warpAffine(padded, turn, (width, height), borderValue=(255, 255, 255))
    [found] = detectors["text"].detect([tilted])
    lines = [line.replace(" ", "").lower() for line in lines_of(found)]
    assert lines[:3] == [
        "region-basedsegmentation",
        "letusfirstdeterminemarkersofthecoinsandthe",
        "background.thesemarkersarepixelsthatwecanlabel",
    ], lines_of(found)
