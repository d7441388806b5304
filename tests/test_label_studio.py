"""Label Studio: the brush RLE both ways against a literal transcription of the SDK's converter, the ML backend's
endpoints against recorded request and response shapes (FastAPI's test client), and the import of an export."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.annotations import import_dataset
from fcnseg.annotations.brush_rle import BrushRleError, decode_mask, decode_values, encode_mask, encode_values
from fcnseg.data.palette import read_mask_png

DATA = Path(__file__).parent / "data" / "label_studio"


# --- an independent implementation: label_studio_sdk/converter/brush.py, transcribed literally -----------------


class SdkInputStream:
    def __init__(self, data):
        self.data = data
        self.i = 0

    def read(self, size):
        out = self.data[self.i : self.i + size]
        self.i += size
        return int(out, 2)


def sdk_bytes2bit(data):
    return "".join(str((data[i // 8] & (1 << (7 - i % 8))) >> (7 - i % 8)) for i in range(len(data) * 8))


def sdk_decode_rle(rle):
    input = SdkInputStream(sdk_bytes2bit(rle))
    num = input.read(32)
    word_size = input.read(5) + 1
    rle_sizes = [input.read(4) + 1 for _ in range(4)]
    i = 0
    out = np.zeros(num, dtype=np.uint8)
    while i < num:
        x = input.read(1)
        j = i + 1 + input.read(rle_sizes[input.read(2)])
        if x:
            val = input.read(word_size)
            out[i:j] = val
            i = j
        else:
            while i < j:
                val = input.read(word_size)
                out[i] = val
                i += 1
    return out


def sdk_base_rle_encode(inarray):
    ia = np.asarray(inarray)
    n = len(ia)
    y = ia[1:] != ia[:-1]
    i = np.append(np.where(y), n - 1)
    z = np.diff(np.append(-1, i))
    p = np.cumsum(np.append(0, z))[:-1]
    return z, p, ia[i]


def sdk_encode_rle(arr, wordsize=8, rle_sizes=(3, 4, 8, 16)):
    num = len(arr)
    base_str = f"{num:032b}" + f"{wordsize - 1:05b}" + "".join(f"{x - 1:04b}" for x in rle_sizes)
    out_str = ""
    for length_reeks, p, value in zip(*sdk_base_rle_encode(arr)):
        if length_reeks == 1:
            out_str += "0" + "00" + "000" + f"{value:08b}"
        elif length_reeks <= 8:
            out_str += "1" + "00" + f"{length_reeks - 1:03b}" + f"{value:08b}"
        elif length_reeks <= 16:
            out_str += "1" + "01" + f"{length_reeks - 1:04b}" + f"{value:08b}"
        elif length_reeks <= 256:
            out_str += "1" + "10" + f"{length_reeks - 1:08b}" + f"{value:08b}"
        else:
            length_temp = length_reeks
            while length_temp > 2**16:
                out_str += "1" + "11" + f"{2**16 - 1:016b}" + f"{value:08b}"
                length_temp -= 2**16
            out_str += "1" + "11" + f"{length_temp - 1:016b}" + f"{value:08b}"
    total_str = base_str + out_str
    total_str += (8 - len(total_str) % 8) * "0"
    return [int(total_str[i : i + 8], 2) for i in range(0, len(total_str), 8)]


def sdk_mask2rle(mask):
    return sdk_encode_rle(np.repeat(mask.ravel(), 4))


# --- the brush RLE -------------------------------------------------------------------------------------------


def masks():
    rng = np.random.default_rng(7)
    yield np.zeros((1, 1), dtype=bool)
    yield np.ones((3, 5), dtype=bool)
    yield rng.random((17, 23)) < 0.5  # short runs: single values and every run width
    y, x = np.mgrid[:300, :400]
    yield (y - 150) ** 2 + (x - 200) ** 2 < 120**2  # long runs: over 2**16 values of background
    yield np.pad(np.ones((1, 1), dtype=bool), ((200, 200), (0, 399)))  # one pixel between runs longer than 2**16


@pytest.mark.parametrize("mask", list(masks()), ids=lambda m: f"{m.shape[0]}x{m.shape[1]}")
def test_brush_rle_is_byte_for_byte_the_sdks_and_both_decoders_agree(mask):
    ours = encode_mask(mask)
    theirs = sdk_mask2rle(mask.astype(np.uint8) * 255)
    assert ours == theirs
    assert np.array_equal(sdk_decode_rle(ours).reshape(*mask.shape, 4)[..., 3] == 255, mask)
    assert np.array_equal(decode_mask(theirs, *mask.shape), mask)


def test_brush_rle_values_of_any_byte_round_trip_and_read_literal_blocks():
    rng = np.random.default_rng(2)
    values = np.repeat(rng.integers(0, 256, 300).astype(np.uint8), rng.integers(1, 40, 300))
    assert np.array_equal(decode_values(encode_values(values)), values)
    assert np.array_equal(decode_values(sdk_encode_rle(values)), sdk_decode_rle(sdk_encode_rle(values)))
    # a flag-0 block of three literal words (the SDK's decoder reads them; its encoder writes only one)
    bits = f"{3:032b}{7:05b}" + "0010" "0011" "0111" "1111" + "0" + "00" + "010" + f"{1:08b}{2:08b}{3:08b}"
    bits += "0" * (-len(bits) % 8)
    literal = [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]
    assert decode_values(literal).tolist() == sdk_decode_rle(literal).tolist() == [1, 2, 3]


def test_a_brush_rle_of_another_size_or_cut_short_is_refused():
    rle = encode_mask(np.ones((4, 4), dtype=bool))
    with pytest.raises(BrushRleError, match="expected 5 x 4 x 4"):
        decode_mask(rle, 5, 4)
    with pytest.raises(BrushRleError, match="ends inside a block"):
        decode_values(encode_mask(np.eye(9, dtype=bool))[:-3])
    with pytest.raises(BrushRleError, match="byte values"):
        decode_values([1, 2, 300, 4, 5, 6, 7, 8])


# --- the ML backend ------------------------------------------------------------------------------------------


CLASS_NAMES = ["background", "sky", "road", "car", "tree"]


def street_labels() -> np.ndarray:
    labels = np.zeros((6, 8), dtype=np.uint8)
    labels[0:2, :] = 1  # sky
    labels[4:6, :] = 2  # road
    labels[3:5, 2:4] = 3  # car on the road
    labels[2, 7] = 4  # tree: a class the brush config does not name
    return labels


class FakePrediction:
    def __init__(self, labels):
        self.labels = labels
        probabilities = np.full((len(CLASS_NAMES), *labels.shape), 0.1, dtype=np.float32)
        np.put_along_axis(probabilities, labels[None].astype(np.int64), 0.6, axis=0)
        self.probabilities = probabilities


class FakePredictor:
    """Stands for a Predictor: the class names, and a label map of the size of the image it is given."""

    class_names = CLASS_NAMES

    def __init__(self):
        self.seen = []

    def predict(self, image, probabilities=False):
        self.seen.append(image.shape)
        assert image.shape[:2] == (6, 8)
        return FakePrediction(street_labels())


@pytest.fixture
def root(tmp_path):
    (tmp_path / "photos").mkdir()
    Image.fromarray(np.zeros((6, 8, 3), dtype=np.uint8)).save(tmp_path / "photos" / "street.png")
    return tmp_path


@pytest.fixture
def client(root):
    pytest.importorskip("fastapi", reason="FastAPI (the serve extra) serves the ML backend")
    from fastapi.testclient import TestClient

    from fcnseg.annotations.label_studio_backend import Backend, create_backend_app

    backend = Backend(FakePredictor(), root=root, model_version="model.pt")
    with TestClient(create_backend_app(backend)) as test_client:
        test_client.backend = backend
        yield test_client


def load(name: str):
    return json.loads((DATA / name).read_text())


def assert_shape(found, expected):
    """``found`` has ``expected``'s structure and values, where ``<any>``, ``<number>`` and ``<brush rle>`` stand for any such value."""
    if expected == "<any>":
        return
    if expected == "<number>":
        assert isinstance(found, (int, float)) and not isinstance(found, bool)
        return
    if expected == "<brush rle>":
        assert isinstance(found, list) and all(isinstance(v, int) and 0 <= v <= 255 for v in found)
        return
    if isinstance(expected, dict):
        assert isinstance(found, dict) and set(found) == set(expected), (found.keys(), expected.keys())
        for key in expected:
            assert_shape(found[key], expected[key])
    elif isinstance(expected, list):
        assert isinstance(found, list) and len(found) == len(expected)
        for f, e in zip(found, expected):
            assert_shape(f, e)
    else:
        assert found == expected


def test_health_answers_up(client):
    for path in ("/health", "/"):
        answer = client.get(path)
        assert answer.status_code == 200
        assert answer.json()["status"] == "UP"


def test_setup_returns_the_model_version(client):
    answer = client.post("/setup", json=load("setup_request.json"))
    assert answer.status_code == 200 and answer.json() == {"model_version": "model.pt"}


def test_predict_returns_brush_masks_in_the_recorded_shape_mapped_by_name(client, caplog):
    request = load("predict_request_brush.json")
    with caplog.at_level(logging.WARNING, logger="fcnseg.annotations.label_studio_backend"):
        answer = client.post("/predict", json=request)
        again = client.post("/predict", json=request)
    assert answer.status_code == again.status_code == 200
    body = answer.json()
    assert_shape(body, load("predict_response_brush.json"))
    labels = street_labels()
    by_label = {r["value"]["brushlabels"][0]: decode_mask(r["value"]["rle"], 6, 8) for r in body["results"][0]["result"]}
    # "Sky" by case, "road" by name, "Vehicle" by predicted_values="car"
    assert np.array_equal(by_label["Sky"], labels == 1)
    assert np.array_equal(by_label["road"], labels == 2)
    assert np.array_equal(by_label["Vehicle"], labels == 3)
    assert np.array_equal(np.asarray(sdk_decode_rle(body["results"][0]["result"][0]["value"]["rle"])).reshape(6, 8, 4)[..., 3] == 255,
                          labels == 1)
    assert 0 < body["results"][0]["score"] <= 1
    # each mismatch is reported once, over both requests, and nothing is guessed
    messages = [r.getMessage() for r in caplog.records]
    assert sum("'Lamp post'" in m for m in messages) == 1
    assert sum("'tree'" in m for m in messages) == 1


def test_predict_returns_polygons_in_percent_for_a_polygon_config(client):
    answer = client.post("/predict", json=load("predict_request_polygon.json"))
    assert answer.status_code == 200
    results = answer.json()["results"][0]["result"]
    assert {r["type"] for r in results} == {"polygonlabels"}
    assert {r["from_name"] for r in results} == {"label"} and {r["to_name"] for r in results} == {"img"}
    assert {r["value"]["polygonlabels"][0] for r in results} == {"sky", "road", "car"}
    sky = next(r for r in results if r["value"]["polygonlabels"] == ["sky"])
    points = np.array(sky["value"]["points"]) * [8 / 100, 6 / 100]  # percent -> pixels
    assert points[:, 1].max() == pytest.approx(2.0) and points[:, 0].min() == pytest.approx(0.0)
    assert sky["original_width"] == 8 and sky["original_height"] == 6


def test_a_task_whose_image_cannot_be_read_gets_an_empty_result_and_a_reason(client, caplog):
    request = load("predict_request_brush.json")
    request["tasks"] = [
        {"id": 1, "data": {"image": "/data/local-files/?d=../outside.png"}},
        {"id": 2, "data": {"image": "/data/local-files/?d=photos/missing.png"}},
        {"id": 3, "data": {"image": "http://127.0.0.1:9/nothing-listens-here.png"}},
        {"id": 4, "data": {"image": "/data/upload/7/1a2b3c4d-street.png"}},
        {"id": 5, "data": {"image": "/data/local-files/?d=photos/street.png"}},
    ]
    with caplog.at_level(logging.WARNING, logger="fcnseg.annotations.label_studio_backend"):
        answer = client.post("/predict", json=request)
    results = answer.json()["results"]
    assert [len(r["result"]) for r in results] == [0, 0, 0, 0, 3]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "outside the local-files root" in text
    assert "no such file" in text
    assert "cannot be downloaded" in text
    assert "--label-studio-url" in text


def test_a_config_without_brush_or_polygon_labels_is_refused_with_a_reason(client):
    request = load("predict_request_brush.json")
    request["label_config"] = '<View><Image name="image" value="$image"/><Choices name="c" toName="image"><Choice value="a"/></Choices></View>'
    answer = client.post("/predict", json=request)
    assert answer.status_code == 400 and "BrushLabels or PolygonLabels" in answer.json()["error"]


def test_webhook_events_are_answered(client):
    answer = client.post("/webhook", json=load("webhook_annotation_created.json"))
    assert answer.status_code == 201 and answer.json()["status"] == "ok"
    answer = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 7}})
    assert answer.status_code == 200 and answer.json() == {"status": "Unknown event"}


def test_the_backend_runs_a_real_model_end_to_end(root):
    pytest.importorskip("fastapi", reason="FastAPI (the serve extra) serves the ML backend")
    from fastapi.testclient import TestClient
    from serve_support import CLASS_NAMES as MODEL_CLASSES, sample_image, save_small_checkpoint

    from fcnseg.annotations.label_studio_backend import Backend, create_backend_app
    from fcnseg.inference.predictor import Predictor

    Image.fromarray(sample_image(48, 64)).save(root / "photos" / "street.png")
    predictor = Predictor.from_checkpoint(save_small_checkpoint(root / "model.pt"), device="cpu", precision="fp32")
    request = load("predict_request_brush.json")
    labels = "".join(f'<Label value="{name}"/>' for name in MODEL_CLASSES[1:])
    request["label_config"] = f'<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image">{labels}</BrushLabels></View>'
    with TestClient(create_backend_app(Backend(predictor, root=root))) as test_client:
        result = test_client.post("/predict", json=request).json()["results"][0]["result"]
    expected = predictor.predict(np.asarray(Image.open(root / "photos" / "street.png").convert("RGB"))).labels
    painted = np.zeros_like(expected)
    for r in result:
        painted[decode_mask(r["value"]["rle"], 48, 64)] = MODEL_CLASSES.index(r["value"]["brushlabels"][0])
    assert np.array_equal(painted, expected)


# --- reading an export ----------------------------------------------------------------------------------------


def test_an_export_is_imported_from_its_first_annotation_not_cancelled(tmp_path):
    Image.fromarray(np.zeros((6, 8, 3), dtype=np.uint8)).save(tmp_path / "1a2b3c4d-street.png")
    report = import_dataset("label-studio", DATA / "export_tasks.json", tmp_path / "out", images=tmp_path, val_fraction=0)
    assert report.written == ["street"]
    assert list(report.classes.names) == ["background", "road", "sky"]
    assert [n.kind for n in report.notes] == ["ignored_shape"]  # the choices
    mask = read_mask_png(tmp_path / "out" / "masks" / "street.png")
    expected = np.zeros((6, 8), dtype=np.uint8)
    expected[0:3, 0:4] = 2  # the rectangle: 50% of 6 x 8
    expected[3:6, 4:8] = 1  # the polygon's square
    assert np.array_equal(mask, expected)


def test_serve_label_studio_serves_the_backend_instead_of_the_page(tmp_path, monkeypatch):
    uvicorn = pytest.importorskip("uvicorn", reason="uvicorn (the serve extra) runs fcnseg serve")
    from serve_support import save_small_checkpoint

    from fcnseg.cli import main

    served = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: served.setdefault("app", self.config.app))
    checkpoint = save_small_checkpoint(tmp_path / "model.pt")
    assert main(["serve", str(checkpoint), "--label-studio", "--label-studio-root", str(tmp_path), "--port", "0"]) == 0
    routes = {route.path for route in served["app"].routes}
    assert {"/health", "/setup", "/predict", "/webhook"} <= routes and "/api/predict" not in routes
