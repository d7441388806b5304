"""Progress a person sees on a large image: the predictor's per-tile callback and `fcnseg predict`'s "tile k/n"."""

from __future__ import annotations

import numpy as np
import pytest

from fcnseg.data.normalization import PAPER_BGR
from fcnseg.data.synthetic import generate_sample
from fcnseg.inference.predictor import Predictor
from fcnseg.inference.tta import parse_tta
from test_predict import scoring_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_the_tile_callback_is_called_once_per_tile_in_order_with_the_total():
    image = generate_sample(0, "val", 1, size=(150, 200)).image
    predictor = Predictor(scoring_model(), PAPER_BGR, precision="fp32", tile=64)
    calls = []
    result = predictor.predict(image, on_tile=lambda done, total: calls.append((done, total)))
    expected_total = int(np.ceil(150 / 64) * np.ceil(200 / 64))  # 3 rows x 4 columns
    assert result.plan.num_tiles == expected_total == 12
    assert calls == [(k, 12) for k in range(1, 13)]
    # the callback changes nothing in the result
    np.testing.assert_array_equal(result.labels, predictor.predict(image).labels)


def test_a_whole_image_calls_back_once_and_tta_counts_every_variants_tiles():
    image = generate_sample(0, "val", 1, size=(96, 128)).image
    calls = []
    Predictor(scoring_model(), PAPER_BGR, precision="fp32").predict(image, on_tile=lambda *c: calls.append(c))
    assert calls == [(1, 1)]
    calls = []
    tta = Predictor(scoring_model(), PAPER_BGR, precision="fp32", tile=64, tta=parse_tta("scales=0.5,1,flip"))
    tta.predict(image, on_tile=lambda *c: calls.append(c))
    # scales 0.5 and 0.5 flipped -> 48x64: one tile each; 1 and 1 flipped -> 96x128: 2x2 tiles each
    assert [str(v) for v in tta.tta] == ["0.5", "0.5 flipped", "1", "1 flipped"]
    assert calls == [(k, 10) for k in range(1, 11)]


def test_predict_shows_the_tiles_of_a_large_image_on_a_terminal(tmp_path, monkeypatch, capsys):
    from PIL import Image

    import fcnseg.progress
    from fcnseg.inference.folder import predict_folder

    Image.fromarray(generate_sample(0, "val", 2, size=(100, 130)).image).save(tmp_path / "big.png")
    monkeypatch.setattr(fcnseg.progress, "is_terminal", lambda stream=None: True)
    predictor = Predictor(scoring_model(), PAPER_BGR, precision="fp32", tile=64)
    report = predict_folder(predictor, [tmp_path / "big.png"], tmp_path / "out", workers=0)
    assert report.processed == 1
    shown = capsys.readouterr().err
    assert [f"big.png: tile {k}/6" in shown for k in range(1, 7)] == [True] * 6
