"""Scoring folders by class name: `fcnseg predict` records its classes, score_folders compares them with the
ground truth's, a class map scores a reordered set as the ordered one, --ignore-class-names scores by index."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.cli import main
from fcnseg.config import ModelConfig
from fcnseg.data.classes import ClassInfo, read_class_file, write_class_file
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.data.synthetic import generate_sample
from fcnseg.errors import ConfigError
from fcnseg.evaluation import score_folders
from fcnseg.models import build_model
from fcnseg.weights.checkpoint import save_checkpoint

CLASSES = ["background", "disc", "square", "triangle"]
REORDERED = ["background", "square", "triangle", "disc"]  # the same classes as another tool exported them


def write_labels(folder, name, labels):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="L").save(folder / f"{name}.png")


@pytest.fixture
def folders(tmp_path):
    """Predictions (with classes.txt) and one ground truth written twice: in the model's class order and reordered."""
    rng = np.random.default_rng(5)
    (tmp_path / "pred").mkdir()
    write_class_file(tmp_path / "pred" / "classes.txt", ClassInfo(tuple(CLASSES)))  # as fcnseg predict writes it
    truths, predictions = {}, {}
    for k in range(3):
        name = f"img{k}"
        truth = rng.integers(0, 4, size=(11, 13))
        truth[rng.random(truth.shape) < 0.1] = 255
        prediction = np.where(rng.random(truth.shape) < 0.6, np.where(truth == 255, 0, truth), rng.integers(0, 4, truth.shape))
        truths[name], predictions[name] = truth, prediction
        write_labels(tmp_path / "pred", name, prediction)
        write_labels(tmp_path / "gt", name, truth)
        reordered = np.vectorize(lambda v: 255 if v == 255 else REORDERED.index(CLASSES[v]))(truth)
        write_labels(tmp_path / "gt-reordered", name, reordered)
    write_class_file(tmp_path / "classes.txt", ClassInfo(tuple(CLASSES)))
    write_class_file(tmp_path / "classes-reordered.txt", ClassInfo(tuple(REORDERED)))
    return tmp_path, truths, predictions


def loop_scores(truths, predictions, truth_names, predicted_names):
    """Per-class IU and mean IU by class name, one pixel at a time (the independent computation)."""
    hits = {n: [0, 0, 0] for n in predicted_names}  # intersection, truth pixels, predicted pixels (scored ones)
    for name, truth in truths.items():
        for (y, x), t in np.ndenumerate(truth):
            if t == 255:
                continue
            truth_name, predicted_name = truth_names[t], predicted_names[predictions[name][y, x]]
            hits[truth_name][1] += 1
            hits[predicted_name][2] += 1
            hits[truth_name][0] += truth_name == predicted_name
    ius = [i / (t + p - i) if t + p - i else float("nan") for i, t, p in hits.values()]
    return ius, float(np.nanmean(ius))


def test_predict_records_the_models_classes_beside_the_label_maps(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="fcn32s", backbone="small", num_classes=len(CLASSES)))
    save_checkpoint(tmp_path / "m.pt", model, model.config, CLASSES, PAPER_BGR)
    (tmp_path / "in").mkdir()
    Image.fromarray(generate_sample(0, "val", 1, size=(40, 48)).image).save(tmp_path / "in" / "a.png")
    argv = ["predict", str(tmp_path / "m.pt"), str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--workers", "0",
            "--no-progress", "--precision", "fp32"]
    assert main(argv) == 0
    assert read_class_file(tmp_path / "out" / "classes.txt").names == tuple(CLASSES)


def test_a_reordered_ground_truth_is_refused_with_both_lists_and_the_remedies(folders):
    root, _, _ = folders
    with pytest.raises(ConfigError) as caught:
        score_folders(root / "pred", root / "gt-reordered", class_file=root / "classes-reordered.txt", progress=False)
    message = str(caught.value)
    assert "the same 4 class names in another order" in message and str(root / "pred" / "classes.txt") in message
    assert any(line.split() == ["1", "disc", "square", "<-", "differs"] for line in message.splitlines())
    assert "--class-map" in message and "--ignore-class-names" in message


def test_a_reordered_ground_truth_with_a_class_map_scores_exactly_as_the_ordered_one(folders):
    root, truths, predictions = folders
    ordered = score_folders(root / "pred", root / "gt", class_file=root / "classes.txt", progress=False)
    (root / "classes.map").write_text("".join(f"{n} -> {n}\n" for n in REORDERED))
    mapped = score_folders(root / "pred", root / "gt-reordered", class_file=root / "classes-reordered.txt",
                           class_map=root / "classes.map", progress=False)
    assert mapped["class_names"] == ordered["class_names"] == CLASSES
    assert mapped["confusion"] == ordered["confusion"]
    ius, mean_iu = loop_scores(truths, predictions, CLASSES, CLASSES)
    assert mapped["per_class_iu"] == pytest.approx(ius, rel=1e-12)
    assert mapped["mean_iu"] == pytest.approx(mean_iu, rel=1e-12) == ordered["mean_iu"]


def test_ignore_class_names_scores_by_index_and_warns(folders, caplog):
    root, truths, predictions = folders
    reordered_truths = {name: np.vectorize(lambda v: 255 if v == 255 else REORDERED.index(CLASSES[v]))(truth)
                        for name, truth in truths.items()}
    with caplog.at_level(logging.WARNING):
        result = score_folders(root / "pred", root / "gt-reordered", class_file=root / "classes-reordered.txt",
                               ignore_class_names=True, progress=False)
    assert "--ignore-class-names" in caplog.text
    # by index, the reordered labels are read under the model's names: the wrong score, as asked
    ius, mean_iu = loop_scores(reordered_truths, predictions, CLASSES, CLASSES)
    assert result["mean_iu"] == pytest.approx(mean_iu, rel=1e-12)
    assert result["per_class_iu"] == pytest.approx(ius, rel=1e-12)


def test_a_prediction_folder_without_classes_txt_is_scored_as_before(folders):
    root, truths, predictions = folders
    (root / "pred" / "classes.txt").unlink()
    result = score_folders(root / "pred", root / "gt-reordered", class_file=root / "classes-reordered.txt", progress=False)
    assert result["class_names"] == REORDERED


def test_generic_prediction_names_match_the_ground_truth_with_a_warning(folders, caplog):
    root, truths, predictions = folders
    write_class_file(root / "pred" / "classes.txt", ClassInfo(tuple(f"class_{i}" for i in range(4))))
    with caplog.at_level(logging.WARNING):
        result = score_folders(root / "pred", root / "gt", class_file=root / "classes.txt", progress=False)
    assert "no class names" in caplog.text
    assert result["mean_iu"] == pytest.approx(loop_scores(truths, predictions, CLASSES, CLASSES)[1], rel=1e-12)
