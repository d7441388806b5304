"""fcnseg rank: the order on a constructed case where it is known, the diverse order, the CSV, copying and linking."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.cli import main
from fcnseg.config import ModelConfig
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.inference.predictor import Predictor
from fcnseg.inference.ranking import diverse_order, gather_top, rank_images
from fcnseg.models import build_model
from fcnseg.weights.checkpoint import save_checkpoint


class BrightnessNet:
    """A net whose certainty grows with each pixel's brightness: logits ``[4 v, 0, 0]`` for grey level ``v`` in 0..1.

    A black pixel is a uniform guess (the most uncertain under every measure), a white one a sure class 0;
    so an image's mean uncertainty falls as its mean brightness... rises, and the right order is known.
    """

    normalization = PAPER_BGR
    num_classes = 3
    margin = 0
    precision = "fp32"
    channels_last = False

    def __call__(self, pixels):
        v = torch.as_tensor(np.asarray(pixels)).float().mean(-1) / 255  # [N, H, W]
        zero = torch.zeros_like(v)
        return torch.stack([4 * v, zero, zero], 1)

    def describe(self):
        return "brightness net"


def grey(level: int, size=(32, 48)) -> np.ndarray:
    return np.full((*size, 3), level, dtype=np.uint8)


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "unlabelled"
    images.mkdir()
    for name, level in [("mid.png", 120), ("dark.png", 10), ("bright.png", 250), ("dim.png", 60)]:
        Image.fromarray(grey(level)).save(images / name)
    return images


@pytest.mark.parametrize("by", ["entropy", "margin", "least-confidence"])
def test_darker_images_rank_first_under_every_measure(folder, by):
    predictor = Predictor(net=BrightnessNet(), max_memory=None)
    ranked, failed = rank_images(predictor, [folder], by=by, progress=False)
    assert not failed
    assert [r.name for r in ranked] == ["dark.png", "dim.png", "mid.png", "bright.png"]
    assert [r.rank for r in ranked] == [1, 2, 3, 4]
    scores = [r.score for r in ranked]
    assert scores == sorted(scores, reverse=True) and 0 <= scores[-1] < scores[0] <= 1
    for r in ranked:
        assert r.score == pytest.approx(1 - r.mean_confidence)


def test_least_confidence_score_is_one_minus_the_hand_softmax(folder):
    predictor = Predictor(net=BrightnessNet(), max_memory=None)
    ranked, _ = rank_images(predictor, [folder / "dim.png"], by="least-confidence", progress=False)
    z = np.array([4 * 60 / 255, 0, 0])
    p = np.exp(z) / np.exp(z).sum()
    assert ranked[0].score == pytest.approx(1 - p.max(), abs=1e-6)


def test_random_order_depends_on_the_seed_only(folder):
    predictor = Predictor(net=BrightnessNet(), max_memory=None)
    first = [r.name for r in rank_images(predictor, [folder], by="random", seed=3, progress=False)[0]]
    again = [r.name for r in rank_images(predictor, [folder], by="random", seed=3, progress=False)[0]]
    assert first == again and sorted(first) == sorted(["mid.png", "dark.png", "bright.png", "dim.png"])


def test_diverse_order_puts_a_near_copy_after_a_different_image():
    scores = np.array([0.9, 0.89, 0.5, 0.1])
    features = np.array([[0.0, 0.0], [0.0, 0.01], [1.0, 1.0], [0.5, 0.5]])
    assert list(np.argsort(-scores)) == [0, 1, 2, 3]
    assert diverse_order(scores, features) == [0, 2, 3, 1]  # 1 is 0's near-copy: picked after the others
    assert diverse_order(scores, np.ones((4, 2))) == [0, 1, 2, 3]  # all alike: the plain order


def test_diverse_ranking_spreads_picks_over_looks(tmp_path):
    images = tmp_path / "frames"
    images.mkdir()
    Image.fromarray(grey(10)).save(images / "a1.png")
    Image.fromarray(grey(11)).save(images / "a2.png")  # a near-copy of a1
    split = grey(40)
    split[:, 24:] = 90  # brighter than the a's: less uncertain, but it looks different
    Image.fromarray(split).save(images / "b.png")
    predictor = Predictor(net=BrightnessNet(), max_memory=None)
    plain = [r.name for r in rank_images(predictor, [images], by="entropy", progress=False)[0]]
    spread = [r.name for r in rank_images(predictor, [images], by="entropy", diverse=True, progress=False)[0]]
    assert plain == ["a1.png", "a2.png", "b.png"]
    assert spread == ["a1.png", "b.png", "a2.png"]


def test_gather_copies_or_links_the_top_and_keeps_what_is_there(folder, tmp_path):
    predictor = Predictor(net=BrightnessNet(), max_memory=None)
    ranked, _ = rank_images(predictor, [folder], progress=False)
    to = tmp_path / "to_label"
    to.mkdir()
    (to / "dim.png").write_bytes(b"the user's own")
    written = gather_top(ranked, 2, to)
    assert [p.name for p in written] == ["dark.png"]
    assert (to / "dark.png").read_bytes() == (folder / "dark.png").read_bytes()
    assert (to / "dim.png").read_bytes() == b"the user's own"
    links = gather_top(ranked, 3, tmp_path / "links", link=True)
    assert all(p.is_symlink() for p in links) and len(links) == 3


def test_cli_writes_the_ranking_csv_and_copies_the_top(folder, tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="fcn32s", backbone="small", num_classes=3))
    torch.nn.init.normal_(model.score_fr.weight, std=0.5)
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, model.eval(), model.config, ["a", "b", "c"], PAPER_BGR)
    out = tmp_path / "ranking.csv"
    assert main(["rank", str(ckpt), str(folder), "--by", "margin", "-o", str(out), "--copy", "2", "--to",
                 str(tmp_path / "next"), "--precision", "fp32", "--no-progress"]) == 0
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["rank", "image", "path", "score_margin", "mean_confidence"]
    assert [int(r[0]) for r in rows[1:]] == [1, 2, 3, 4]
    scores = [float(r[3]) for r in rows[1:]]
    assert scores == sorted(scores, reverse=True)
    assert sorted(p.name for p in (tmp_path / "next").iterdir()) == sorted(r[1] for r in rows[1:3])
    assert main(["rank", str(ckpt), str(folder), "--copy", "2"]) != 0  # --copy without --to
    assert "--to DIR" in capsys.readouterr().err
