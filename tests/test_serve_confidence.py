"""fcnseg serve: ?confidence=KIND adds the confidence map (with its scale) and the mean confidence to the answer."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="fcnseg serve needs the serve extra: pip install 'fcnseg[serve]'")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from fcnseg.inference.confidence import colour_ramp  # noqa: E402
from fcnseg.inference.predictor import Predictor  # noqa: E402
from fcnseg.serve.app import create_app  # noqa: E402
from serve_support import save_small_checkpoint, sample_image  # noqa: E402


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    return Predictor.from_checkpoint(save_small_checkpoint(tmp_path_factory.mktemp("serve") / "small.pt"),
                                     precision="fp32")


def test_confidence_map_comes_back_when_asked_and_matches_predictor_predict(predictor):
    image = sample_image()
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    with TestClient(create_app(predictor)) as client:
        plain = client.post("/api/predict", content=buffer.getvalue(), headers={"content-type": "image/png"}).json()
        answer = client.post("/api/predict?confidence=entropy", content=buffer.getvalue(),
                             headers={"content-type": "image/png"}).json()
        bad = client.post("/api/predict?confidence=sure", content=buffer.getvalue(),
                          headers={"content-type": "image/png"})
    assert plain.get("confidence_png") is None
    expected = predictor.predict(image, confidence="entropy").confidence
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["confidence_png"]))).convert("RGB"))
    h, w = expected.shape
    assert picture.shape[1] > w  # the scale to the right
    np.testing.assert_array_equal(picture[:h, :w], colour_ramp(expected))
    assert answer["mean_confidence"] == pytest.approx(float(expected.astype(np.float64).mean()), abs=1e-6)
    assert bad.status_code == 422
