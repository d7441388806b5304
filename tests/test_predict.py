"""Predictor and `fcnseg predict`: precision choice, agreement with a plain forward, folder runs that skip, report and resume."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.weights.checkpoint import save_checkpoint
from fcnseg.cli import main
from fcnseg.config import ModelConfig
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.data.synthetic import generate_sample
from fcnseg.errors import ConfigError
from fcnseg.models import build_model
from fcnseg.inference.predictor import Predictor, select_layout

CLASSES = ["background", "disc", "square", "triangle"]


def scoring_model(seed: int = 3):
    """A small FCN-8s with random score layers (zero-initialised ones would predict class 0 everywhere)."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=len(CLASSES)))
    for name in ("score_fr", "score_pool4", "score_pool3"):
        torch.nn.init.normal_(getattr(model, name).weight, std=0.05)
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    model = scoring_model()
    save_checkpoint(path, model, model.config, CLASSES, PAPER_BGR)
    return path


@pytest.fixture(scope="module")
def image():
    return generate_sample(0, "val", 1, size=(120, 170)).image


def test_bf16_runs_channels_last_under_autocast_and_fp32_adds_nothing():
    fast = Predictor(scoring_model(), PAPER_BGR, precision="bf16")
    assert fast.channels_last and fast.autocast_dtype == torch.bfloat16
    assert fast.model.backbone.conv1_1.weight.is_contiguous(memory_format=torch.channels_last)
    plain = Predictor(scoring_model(), PAPER_BGR, precision="fp32", layout="contiguous")
    assert not plain.channels_last and plain.autocast_dtype is None and plain.net is plain.model


def test_auto_layout_follows_the_precision_and_the_cpu(fake_cpu):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert select_layout(cpu, "bf16") == "channels_last" and select_layout(cuda, "fp16") == "channels_last"
    assert select_layout(cuda, "fp32") == "contiguous"
    fake_cpu("avx512")
    assert select_layout(cpu, "fp32") == "contiguous"
    fake_cpu("avx2")
    assert select_layout(cpu, "fp32") == "channels_last"
    assert select_layout(cpu, "fp32", "contiguous") == "contiguous"
    with pytest.raises(ConfigError, match="layout 'nhwc'"):
        select_layout(cpu, "fp32", "nhwc")


def test_fp32_labels_are_the_same_in_either_layout(image):
    labels = {layout: Predictor(scoring_model(), PAPER_BGR, precision="fp32", layout=layout).predict(image).labels
              for layout in ("contiguous", "channels_last")}
    assert (labels["contiguous"] == labels["channels_last"]).mean() >= 0.999


def test_fp32_labels_equal_the_argmax_of_a_plain_forward(image):
    model = scoring_model()
    result = Predictor(model, PAPER_BGR, precision="fp32").predict(image)
    with torch.no_grad():
        expected = model(PAPER_BGR.image_to_tensor(image)[None])[0].argmax(0).numpy()
    assert result.labels.dtype == np.uint8 and result.labels.shape == image.shape[:2]
    np.testing.assert_array_equal(result.labels, expected)
    assert len(np.unique(expected)) >= 3


def test_bf16_agrees_with_fp32_and_probabilities_are_a_distribution(image):
    model = scoring_model()
    fp32 = Predictor(model, PAPER_BGR, precision="fp32").predict(image, probabilities=True)
    bf16 = Predictor(scoring_model(), PAPER_BGR, precision="bf16").predict(image)
    assert (fp32.labels == bf16.labels).mean() >= 0.99
    probs = fp32.probabilities
    assert probs.dtype == np.float16 and probs.shape == (len(CLASSES), *image.shape[:2])
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=0.01)
    assert (probs.argmax(0) == fp32.labels).mean() > 0.99  # float16 rounding may tie near-equal classes


def test_predictor_loads_a_checkpoint_with_its_class_names(checkpoint):
    predictor = Predictor.from_checkpoint(checkpoint, precision="fp32")
    assert predictor.class_names == CLASSES and predictor.num_classes == 4
    assert "fcn8s (small, 4 classes) on cpu, precision fp32" in predictor.describe()


def _folder(tmp_path):
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(generate_sample(0, "val", 2, size=(100, 130)).image).save(root / "a.jpg")
    Image.fromarray(generate_sample(0, "val", 3, size=(90, 70)).image).convert("L").save(root / "sub" / "b.png")
    Image.fromarray(generate_sample(0, "val", 4, size=(64, 96)).image).convert("RGBA").save(root / "c.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def test_cli_segments_a_folder_reports_bad_files_and_resumes(tmp_path, checkpoint, capsys):
    root, out = _folder(tmp_path), tmp_path / "out"
    argv = ["predict", str(checkpoint), str(root), "-o", str(out), "--overlay", "--probabilities", "--stats",
            "--workers", "1", "--no-progress", "--precision", "fp32"]
    assert main(argv) == 1  # one file failed
    printed = capsys.readouterr().out
    assert "3 segmented, 0 already done, 1 failed" in printed and "broken.jpg" in printed
    for stem, (h, w) in {"a": (100, 130), "sub/b": (90, 70), "c": (64, 96)}.items():
        with Image.open(out / f"{stem}_labels.png") as mask:
            assert mask.mode == "P" and mask.size == (w, h)
        assert np.load(out / f"{stem}_prob.npy").shape == (4, h, w)
        assert (out / f"{stem}_overlay.jpg").is_file()
    assert not list(out.rglob(".*"))  # no temp files left
    rows = list(csv.DictReader(open(out / "areas.csv")))
    assert [r["image"] for r in rows] == ["a.jpg", "c.png", "sub/b.png"]
    assert sum(int(rows[0][f"{c}_pixels"]) for c in CLASSES) == 100 * 130
    doc = json.loads((out / "areas.json").read_text())
    assert abs(sum(doc["total"]["fraction"].values()) - 1) < 1e-9

    # A re-run skips what is done (and keeps it in the statistics); removing one output redoes only it.
    before = (out / "a_labels.png").stat().st_mtime_ns
    (out / "c_labels.png").unlink()
    assert main(argv) == 1
    assert "1 segmented, 2 already done, 1 failed" in capsys.readouterr().out
    assert (out / "a_labels.png").stat().st_mtime_ns == before
    assert len(list(csv.DictReader(open(out / "areas.csv")))) == 3


def test_cli_on_good_files_exits_zero_and_tiles_under_a_small_budget(tmp_path, checkpoint, capsys):
    path = tmp_path / "big.png"
    Image.fromarray(generate_sample(0, "val", 5, size=(200, 260)).image).save(path)
    assert main(["predict", str(checkpoint), str(path), "-o", str(tmp_path / "o"), "--tile", "128",
                 "--workers", "0", "--no-progress"]) == 0
    assert "1 segmented, 0 already done, 0 failed" in capsys.readouterr().out
    with Image.open(tmp_path / "o" / "big_labels.png") as mask:
        assert mask.size == (260, 200)


def test_cli_rejects_an_unreadable_memory_budget(tmp_path, checkpoint, capsys):
    assert main(["predict", str(checkpoint), str(tmp_path), "-o", str(tmp_path / "o"), "--max-memory", "lots"]) == 1
    assert "--max-memory" in capsys.readouterr().err


def test_tile_normalisation_equals_the_checkpoint_normalisation(image):
    from fcnseg.data.normalization import IMAGENET_RGB
    from fcnseg.inference.predictor import normalize_tile

    for normalization in (PAPER_BGR, IMAGENET_RGB):
        expected = normalization.image_to_tensor(image)[None]
        for channels_last in (False, True):
            x = normalize_tile(image, normalization, channels_last)
            torch.testing.assert_close(x, expected, rtol=0, atol=0)
            assert x.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_a_failed_file_is_named_once_in_the_summary_and_the_log(tmp_path, checkpoint, capsys, caplog):
    root = tmp_path / "in"
    root.mkdir()
    Image.fromarray(generate_sample(0, "val", 2, size=(64, 80)).image).save(root / "good.png")
    (root / "empty.png").write_bytes(b"")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    argv = ["predict", str(checkpoint), str(root), "-o", str(tmp_path / "out"), "--workers", "0", "--no-progress"]
    assert main(argv) == 1
    lines = capsys.readouterr().out.splitlines()
    for name, reason in (("empty.png", "empty file (0 bytes)"), ("broken.jpg", "cannot read the image")):
        path = str(root / name)
        [line] = [ln for ln in lines if name in ln]
        assert line.strip().startswith(f"{path}: {reason}"), line
        assert line.count(name) == 1, line  # the reason does not repeat the path
        [logged] = [r.getMessage() for r in caplog.records if name in r.getMessage()]
        assert logged.startswith(f"skipping {path}: {reason}") and logged.count(path) == 1, logged
