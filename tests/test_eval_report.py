"""`fcnseg eval --report`: per-image scores against the paper's definitions, the pictures, the gallery's picks, the page."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.cli import main
from fcnseg.data import SyntheticDataset, make_synthetic
from fcnseg.data.palette import voc_palette
from fcnseg.evaluation import evaluate, predict_items, score_folders
from fcnseg.reports.classes import plot_class_iu, plot_class_iu_history
from fcnseg.reports.confusion import normalised_confusion, plot_confusion
from fcnseg.reports.evaluation_report import folder_items, write_report
from fcnseg.reports.gallery import IGNORE_GREY, WRONG_COLOUR, error_map, pick_extremes
from fcnseg.reports.html import linked_files

IGNORE = 255
CHROMIUM = Path("/usr/bin/chromium")


# ----------------------------------------------------------------------------- hand-made data


class HandMade(torch.utils.data.Dataset):
    """Items whose image carries the prediction in channel 0, so that :class:`Oracle` "predicts" it exactly."""

    def __init__(self, truths, predictions, num_classes):
        self.truths, self.predictions, self.num_classes = truths, predictions, num_classes
        self.class_names = [f"c{i}" for i in range(num_classes)]
        self.palette = voc_palette(256)
        self.loads = 0

    def __len__(self):
        return len(self.truths)

    def name(self, i):
        return f"img{i}"

    def __getitem__(self, i):
        self.loads += 1
        image = torch.zeros(3, *self.truths[i].shape)
        image[0] = torch.from_numpy(np.asarray(self.predictions[i], dtype=np.float32))
        return image, torch.from_numpy(np.asarray(self.truths[i], dtype=np.int64))

    def load_raw(self, i):
        from fcnseg.data.base import RawItem

        return RawItem(self.name(i), np.zeros(self.truths[i].shape + (3,), np.uint8), np.asarray(self.truths[i]))


class Oracle(torch.nn.Module):
    """Logits that are one-hot on the class written into the image's first channel."""

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the model a device

    def forward(self, x):
        return torch.nn.functional.one_hot(x[:, 0].long(), self.num_classes).permute(0, 3, 1, 2).float()


def paper_image_scores(truth, prediction, n):
    """Per-image pixel accuracy, mean IU and most-confused pair, from the definitions, pixel by pixel."""
    scored = truth != IGNORE
    t, p = truth[scored], prediction[scored]
    accuracy = (t == p).mean() if t.size else np.nan
    ius = []
    for c in range(n):
        union = np.sum((t == c) | (p == c))
        if union:  # classes in neither the ground truth nor the prediction are left out of the mean
            ius.append(np.sum((t == c) & (p == c)) / union)
    pairs = {}
    for a, b in zip(t.tolist(), p.tolist()):
        if a != b:
            pairs[(a, b)] = pairs.get((a, b), 0) + 1
    worst = max(sorted(pairs), key=lambda k: pairs[k]) if pairs else None
    return {
        "pixel_accuracy": accuracy,
        "mean_iu": np.mean(ius) if ius else np.nan,
        "most_confused": None if worst is None else {"truth": worst[0], "prediction": worst[1], "pixels": pairs[worst]},
    }


def hand_made_maps():
    """Three 4x4 images over 4 classes, with ignore pixels and a class predicted only on ignore pixels."""
    t0 = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [IGNORE, IGNORE, 2, 2]])
    p0 = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [2, 2, 1, 1], [3, 3, 2, 2]])  # the 3s sit on ignore pixels
    t1 = np.array([[3, 3, 3, 3], [3, 3, 3, 3], [0, 0, 0, 0], [0, 0, 0, 0]])
    p1 = np.array([[3, 3, 3, 3], [3, 3, 3, 3], [0, 0, 0, 0], [0, 0, 0, 0]])
    t2 = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [IGNORE] * 4])
    p2 = np.array([[2, 2, 2, 2], [2, 2, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0]])
    return [t0, t1, t2], [p0, p1, p2]


# ----------------------------------------------------------------------------- per-image metrics


def test_per_image_scores_follow_the_paper_definitions_on_hand_made_maps():
    truths, predictions = hand_made_maps()
    result = evaluate(Oracle(4), HandMade(truths, predictions, 4), precision="fp32", progress=False, per_image=True)
    rows = result["per_image"]
    assert [r["name"] for r in rows] == ["img0", "img1", "img2"]
    for row, truth, prediction in zip(rows, truths, predictions):
        expected = paper_image_scores(truth, prediction, 4)
        assert row["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"], abs=1e-12)
        assert row["mean_iu"] == pytest.approx(expected["mean_iu"], abs=1e-12)
        assert row["most_confused"] == expected["most_confused"]
        assert row["pixels"] == int(np.sum(truth != IGNORE))
    # image 0 by hand: class 3 is predicted only on ignore pixels, so it does not enter the mean
    assert rows[0]["mean_iu"] == pytest.approx(np.mean([3 / 4, 4 / 7, 4 / 6]))
    assert rows[0]["most_confused"] == {"truth": 2, "prediction": 1, "pixels": 2}
    assert rows[1]["mean_iu"] == 1.0 and rows[1]["most_confused"] is None
    # image 2: class 1 never predicted as itself for 6 pixels; 2 and 0 predicted but absent count with IU 0
    assert rows[2]["mean_iu"] == pytest.approx(np.mean([0, 5 / 12, 0]))
    assert rows[2]["most_confused"] == {"truth": 1, "prediction": 2, "pixels": 6}


def test_scoring_per_image_leaves_the_data_set_metrics_unchanged():
    truths, predictions = hand_made_maps()
    dataset = HandMade(truths, predictions, 4)
    plain = evaluate(Oracle(4), dataset, precision="fp32", progress=False)
    per_image = evaluate(Oracle(4), dataset, precision="fp32", progress=False, per_image=True)
    assert per_image["confusion"] == plain["confusion"] and per_image["mean_iu"] == plain["mean_iu"]
    assert "per_image" not in plain


def write_labels(folder, name, mask):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="L").save(folder / f"{name}.png")


def test_score_folders_per_image_rows_agree_with_the_definitions(tmp_path):
    truths, predictions = hand_made_maps()
    for i, (truth, prediction) in enumerate(zip(truths, predictions)):
        write_labels(tmp_path / "gt", f"img{i}", truth)
        write_labels(tmp_path / "pred", f"img{i}", prediction)
    result = score_folders(tmp_path / "pred", tmp_path / "gt", num_classes=4, progress=False, per_image=True)
    for row, truth, prediction in zip(result["per_image"], truths, predictions):
        expected = paper_image_scores(truth, prediction, 4)
        assert row["mean_iu"] == pytest.approx(expected["mean_iu"], abs=1e-12)
        assert row["most_confused"] == expected["most_confused"]
        assert Path(row["truth_path"]).name == f"{row['name']}.png"


# ----------------------------------------------------------------------------- pictures


def test_confusion_heatmap_draws_counts_over_their_row_sums(tmp_path):
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 1000, (5, 5))
    counts[3] = 0  # a class absent from the ground truth
    info = plot_confusion(counts, list("abcde"), tmp_path / "confusion.png")
    for i in range(5):
        row_total = sum(int(counts[i, j]) for j in range(5))
        for j in range(5):
            if row_total == 0:
                assert np.isnan(info["matrix"][i, j])
            else:
                assert info["matrix"][i, j] == pytest.approx(int(counts[i, j]) / row_total, rel=1e-12)
    np.testing.assert_array_equal(normalised_confusion(counts), info["matrix"])
    with Image.open(tmp_path / "confusion.png") as png:
        assert png.size == (info["width"], info["height"])
    assert info["annotated"] and info["x_labels"] == list("abcde") and info["y_labels"] == list("abcde")


def test_confusion_heatmap_stays_readable_at_60_classes(tmp_path):
    rng = np.random.default_rng(1)
    names = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(4, 16))) for _ in range(60)]
    counts = rng.integers(0, 50, (60, 60)) + np.diag(rng.integers(100, 2000, 60))
    info = plot_confusion(counts, names, tmp_path / "confusion.png")
    assert info["x_labels"] == names and info["y_labels"] == names  # every class named on both axes
    assert not info["annotated"]  # no numbers in 60x60 cells
    label_pixels = info["font_size"] * 100 / 72  # points at 100 dpi
    assert info["font_size"] >= 6 and info["cell_pixels"] >= 2 * label_pixels  # labels fit their cells
    with Image.open(tmp_path / "confusion.png") as png:
        assert png.size == (info["width"], info["height"])
        assert 1200 <= png.size[0] <= 2400 and 1200 <= png.size[1] <= 2400
    small = plot_confusion(np.eye(2, dtype=int) * 5, ["a", "b"], tmp_path / "two.png")
    assert small["annotated"] and small["font_size"] > info["font_size"] and small["width"] < info["width"]


def test_class_iu_bars_put_the_lowest_first_and_undefined_classes_last(tmp_path):
    info = plot_class_iu([0.5, None, 0.1, 0.9], ["a", "b", "c", "d"], tmp_path / "iu.png", pixel_counts=[5, 0, 3, 2])
    assert info["order"] == [2, 0, 3, 1]
    assert Image.open(tmp_path / "iu.png").size == (info["width"], info["height"])


def test_class_iu_history_draws_lines_for_few_classes_and_a_heatmap_for_many(tmp_path):
    rng = np.random.default_rng(2)
    for n, kind in ((6, "lines"), (60, "heatmap")):
        history = [{"iteration": 100 * k, "per_class_iu": rng.uniform(0, 1, n).tolist()} for k in range(1, 6)]
        history[0]["per_class_iu"][0] = None
        info = plot_class_iu_history(history, [f"class {i}" for i in range(n)], tmp_path / f"h{n}.png")
        assert info["kind"] == kind and (tmp_path / f"h{n}.png").stat().st_size > 1000


def test_error_map_marks_wrong_pixels_and_shows_ignore_pixels_neutral():
    mask = np.array([[0, 1], [IGNORE, 2]])
    prediction = np.array([[0, 2], [1, 2]])
    out = error_map(mask, prediction)
    assert tuple(out[0, 1]) == WRONG_COLOUR
    assert tuple(out[1, 0]) == IGNORE_GREY  # wrong class under ignore: neither right nor wrong
    assert tuple(out[0, 0]) not in (WRONG_COLOUR, IGNORE_GREY) and tuple(out[0, 0]) == tuple(out[1, 1])


# ----------------------------------------------------------------------------- the gallery's picks


def graded_set(num_images=6, size=8):
    """Image i has i * 6 wrong pixels of 64: the worst is the last, the best the first."""
    truths, predictions = [], []
    for i in range(num_images):
        truth = np.zeros((size, size), dtype=np.int64)
        truth[:, size // 2 :] = 1
        prediction = truth.copy().ravel()
        prediction[: 6 * i] = 1 - prediction[: 6 * i]
        truths.append(truth)
        predictions.append(prediction.reshape(size, size))
    return HandMade(truths, predictions, 2)


def test_gallery_picks_the_worst_and_best_images_and_re_predicts_only_those(tmp_path):
    dataset = graded_set()
    model = Oracle(2)
    result = evaluate(model, dataset, precision="fp32", progress=False, per_image=True)
    rows = result.pop("per_image")
    dataset.loads = 0
    asked = []

    def load_items(chosen):
        asked.extend(r["name"] for r in chosen)
        return predict_items(model, dataset, [r["index"] for r in chosen], precision="fp32")

    report = write_report(tmp_path / "report", result, rows, load_items=load_items, palette=dataset.palette,
                          num_images=2)
    assert [r["name"] for r in report["worst"]] == ["img5", "img4"]
    assert [r["name"] for r in report["best"]] == ["img0", "img1"]
    assert asked == ["img5", "img4", "img0", "img1"] and dataset.loads == 4  # 2N items, not the whole set
    for name in ("gallery_worst.png", "gallery_best.png"):
        assert Image.open(tmp_path / "report" / name).size[1] > 200


def test_pick_extremes_splits_a_small_set_so_no_image_is_shown_twice():
    rows = [{"name": f"x{i}", "mean_iu": v, "pixel_accuracy": v} for i, v in enumerate([0.2, 0.9, 0.5])]
    rows.append({"name": "empty", "mean_iu": float("nan"), "pixel_accuracy": float("nan")})
    picked = pick_extremes(rows, 8)
    assert [r["name"] for r in picked["worst"]] == ["x0", "x2"] and [r["name"] for r in picked["best"]] == ["x1"]


# ----------------------------------------------------------------------------- the page and the command


def tiny_checkpoint(tmp_path, num_val=4):
    from fcnseg import models
    from fcnseg.weights import checkpoint
    from fcnseg.data import PAPER_BGR

    make_synthetic(tmp_path / "data", num_train=0, num_val=num_val, seed=3, size=(48, 56))
    config = models.ModelConfig(arch="fcn32s", backbone="small", num_classes=6)
    torch.manual_seed(0)
    checkpoint.save_checkpoint(
        tmp_path / "model.pt", models.build_model(config), config, list(SyntheticDataset().class_names), PAPER_BGR
    )
    return tmp_path / "model.pt"


def check_page(report: Path):
    text = (report / "index.html").read_text(encoding="utf-8")
    targets = linked_files(text)
    for name in ("confusion.png", "class_iu.png", "per_image.csv", "metrics.json"):
        assert name in targets
    for target in targets:
        assert "://" not in target and not target.startswith("/")  # relative, opens offline
        path = report / target
        assert path.is_file(), target
        if path.suffix == ".png":
            with Image.open(path) as png:
                png.verify()
    assert "<script" not in text
    return text


def test_eval_report_end_to_end_on_a_tiny_model_and_four_synthetic_images(tmp_path, capsys):
    model = tiny_checkpoint(tmp_path)
    report = tmp_path / "report"
    argv = ["eval", str(model), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "eval.json"),
            "--report", str(report), "--report-images", "1", "--precision", "fp32", "--no-progress"]
    assert main(argv) == 0
    assert f"report written to {report / 'index.html'}" in capsys.readouterr().out
    text = check_page(report)
    assert "gallery_worst.png" in text and "gallery_best.png" in text and "mean IU" in text
    with open(report / "per_image.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    assert [line["name"] for line in lines] == [f"val_{i:05d}" for i in range(4)]
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert "per_image" not in saved  # thousands of rows belong in the CSV, not the summary
    assert json.loads((report / "metrics.json").read_text())["mean_iu"] == pytest.approx(saved["mean_iu"])
    # the CSV against the definitions, on the checkpoint's own predictions
    from fcnseg.weights.checkpoint import load_model
    from fcnseg.data import VOCDataset

    loaded = load_model(model)
    dataset = VOCDataset(tmp_path / "data", "val", normalization=loaded.normalization)
    items = predict_items(loaded.model, dataset, list(range(4)), precision="fp32")
    for line, item in zip(lines, items):
        expected = paper_image_scores(item["mask"], item["prediction"], 6)
        assert float(line["mean_iu"]) == pytest.approx(expected["mean_iu"], abs=1e-6)
        assert float(line["pixel_accuracy"]) == pytest.approx(expected["pixel_accuracy"], abs=1e-6)
        pair = expected["most_confused"]
        assert int(line["confused_pixels"]) == pair["pixels"]
        assert line["confused_truth"] == dataset.class_names[pair["truth"]]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium; the page's files are checked instead")
def test_report_page_renders_in_headless_chromium(tmp_path):
    truths, predictions = hand_made_maps()
    dataset = HandMade(truths, predictions, 4)
    result = evaluate(Oracle(4), dataset, precision="fp32", progress=False, per_image=True)
    rows = result.pop("per_image")
    write_report(tmp_path / "report", result, rows, palette=dataset.palette, num_images=1,
                 load_items=lambda chosen: predict_items(Oracle(4), dataset, [r["index"] for r in chosen]))
    check_page(tmp_path / "report")
    shot = tmp_path / "shot.png"
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400", f"--screenshot={shot}",
        (tmp_path / "report" / "index.html").as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    with Image.open(shot) as png:
        assert png.size == (1200, 2400)
        pixels = np.asarray(png.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # the page drew text and pictures, not a blank


def test_eval_report_from_folders_with_and_without_images(tmp_path):
    make_synthetic(tmp_path / "data", num_train=0, num_val=3, seed=4, size=(40, 48), image_format="png")
    gt = tmp_path / "data" / "SegmentationClass"
    rng = np.random.default_rng(0)
    for path in sorted(gt.glob("*.png")):
        write_labels(tmp_path / "pred", path.stem, rng.integers(0, 6, (40, 48)))
    base = ["eval", "--pred-dir", str(tmp_path / "pred"), "--gt-dir", str(gt), "--class-file",
            str(tmp_path / "data" / "classes.txt"), "--out", str(tmp_path / "s.json"), "--no-progress"]
    assert main(base + ["--report", str(tmp_path / "plain")]) == 0
    assert main(base + ["--report", str(tmp_path / "pictured"), "--image-dir", str(tmp_path / "data" / "JPEGImages")]) == 0
    check_page(tmp_path / "plain")
    check_page(tmp_path / "pictured")
    with Image.open(tmp_path / "plain" / "gallery_worst.png") as plain, \
            Image.open(tmp_path / "pictured" / "gallery_worst.png") as pictured:
        assert pictured.size[0] > plain.size[0]  # one more column: the image
    rows = score_folders(tmp_path / "pred", gt, num_classes=6, progress=False, per_image=True)["per_image"]
    assert "image" not in folder_items(rows[:1])[0]
    assert folder_items(rows[:1], image_dir=tmp_path / "data" / "JPEGImages")[0]["image"].shape == (40, 48, 3)


def test_report_flags_are_checked(tmp_path):
    from fcnseg.errors import ConfigError
    from fcnseg.cli import build_parser
    from fcnseg.commands.evaluate import run

    args = build_parser(["eval"]).parse_args(["eval", "m.pt", "--data", "d", "--image-dir", "imgs", "--report", "r"])
    with pytest.raises(ConfigError, match="--image-dir is for --pred-dir scoring"):
        run(args)
    args = build_parser(["eval"]).parse_args(["eval", "m.pt", "--data", "d", "--report-images", "-1"])
    with pytest.raises(ConfigError, match="--report-images must be 0 or more"):
        run(args)


def test_matplotlib_is_not_imported_by_the_report_modules_or_the_eval_command():
    code = (
        "import sys, fcnseg, fcnseg.reports.evaluation_report, fcnseg.commands.evaluate\n"
        "from fcnseg.cli import build_parser; build_parser(['eval'])\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _scored_folders(tmp_path, num_val=4):
    make_synthetic(tmp_path / "data", num_train=0, num_val=num_val, seed=4, size=(40, 48), image_format="png")
    gt = tmp_path / "data" / "SegmentationClass"
    rng = np.random.default_rng(0)
    for path in sorted(gt.glob("*.png")):
        write_labels(tmp_path / "pred", path.stem, rng.integers(0, 6, (40, 48)))
    base = ["eval", "--pred-dir", str(tmp_path / "pred"), "--gt-dir", str(gt), "--class-file",
            str(tmp_path / "data" / "classes.txt"), "--out", str(tmp_path / "s.json"), "--no-progress"]
    return base, sorted(p.stem for p in gt.glob("*.png"))


def test_the_report_page_lists_the_skipped_items_and_counts_them_in_its_headline(tmp_path):
    # the page said "3 images scored" and never mentioned the 3 it skipped
    base, stems = _scored_folders(tmp_path, num_val=6)
    broken = stems[:3]
    for stem in broken:
        (tmp_path / "pred" / f"{stem}.png").write_bytes(b"")
    main(base + ["--report", str(tmp_path / "report")])
    text = check_page(tmp_path / "report")
    pixels = json.loads((tmp_path / "s.json").read_text())["pixels"]
    assert f"3 images ({pixels:,} pixels) scored, 3 items skipped (listed below)" in text
    skipped_section = text[text.index('id="skipped"'):text.index('id="files"')]
    for stem in broken:
        assert f"<td>{stem}</td>" in skipped_section and f"{stem}.png" in skipped_section
    assert skipped_section.count("<tr><td>") == 3 and "empty" in skipped_section


def test_one_image_is_counted_in_the_singular_and_no_skipped_section_is_drawn(tmp_path):
    base, _ = _scored_folders(tmp_path, num_val=1)
    assert main(base + ["--report", str(tmp_path / "report")]) == 0
    text = check_page(tmp_path / "report")
    pixels = json.loads((tmp_path / "s.json").read_text())["pixels"]
    assert f"1 image ({pixels:,} pixels) scored" in text and "1 images" not in text
    assert 'id="skipped"' not in text


def test_a_corrupt_image_in_image_dir_costs_its_own_panel_not_the_report(tmp_path):
    # one corrupt image in --image-dir aborted the whole report
    base, stems = _scored_folders(tmp_path, num_val=4)
    images = tmp_path / "data" / "JPEGImages"
    bad = next(p for p in images.iterdir() if p.stem == stems[0])
    bad.write_bytes(b"\x89PNG\r\n\x1a\n damaged")
    assert main(base + ["--report", str(tmp_path / "pictured"), "--report-images", "2", "--image-dir", str(images)]) == 0
    assert main(base + ["--report", str(tmp_path / "plain"), "--report-images", "2"]) == 0
    text = check_page(tmp_path / "pictured")
    assert f"{stems[0]}: the gallery shows no image ({bad.name}:" in text
    for kind in ("worst", "best"):
        with Image.open(tmp_path / "plain" / f"gallery_{kind}.png") as plain, \
                Image.open(tmp_path / "pictured" / f"gallery_{kind}.png") as pictured:
            assert pictured.size[0] > plain.size[0]  # the other images are still drawn, in their column
