"""SIFT Flow layout: two label maps per item, their mappings, the scan, per-head scoring with the leave-out of absent classes."""

import math

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from fcnseg.data import (
    PadCollate,
    RandomCrop,
    RandomMirror,
    RandomScale,
    SIFTFlowDataset,
    build_dataset,
    detect_kind,
    split_targets,
)
from fcnseg.data.items import Head
from fcnseg.data.siftflow import SIFTFLOW_ABSENT_FROM_TEST, SUBFOLDER
from fcnseg.data.synthetic_layouts import make_synthetic_layout
from fcnseg.errors import ConfigError
from fcnseg.scoring import HeadScores, format_head_tables


def write_item(root, name, h=8, w=10, seed=0, semantic=None, geometric=None, parts=("image", "sem", "geo"), key="S"):
    rng = np.random.default_rng(seed)
    semantic = semantic if semantic is not None else rng.integers(0, 34, (h, w)).astype(np.int16)
    geometric = geometric if geometric is not None else rng.integers(-1, 4, (h, w)).astype(np.int16)
    if "image" in parts:
        image = rng.integers(0, 256, (semantic.shape[0], semantic.shape[1], 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "Images" / SUBFOLDER / f"{name}.jpg", quality=95)
    if "sem" in parts:
        scipy.io.savemat(str(root / "SemanticLabels" / SUBFOLDER / f"{name}.mat"), {key: semantic})
    if "geo" in parts:
        scipy.io.savemat(str(root / "GeoLabels" / SUBFOLDER / f"{name}.mat"), {"S": geometric})


def siftflow_tree(root, splits):
    for top in ("Images", "SemanticLabels", "GeoLabels"):
        (root / top / SUBFOLDER).mkdir(parents=True, exist_ok=True)
    for split, names in splits.items():
        for i, name in enumerate(names):
            write_item(root, name, seed=i)
        (root / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))


def test_both_labelings_are_mapped_as_the_reference_layer_does(tmp_path):
    siftflow_tree(tmp_path, {"test": ["coast_natu975"]})
    semantic = np.array([[0, 1, 33], [28, 5, 0]], dtype=np.int16)
    geometric = np.array([[-1, 1, 2], [3, 0, -1]], dtype=np.int16)
    write_item(tmp_path, "coast_natu975", semantic=semantic, geometric=geometric)
    # by hand: semantic 0 void, 1..33 -> 0..32; geometric -1 (and 0) void, 1 sky 2 horizontal 3 vertical -> 0..2
    expected = np.array([[[255, 0, 32], [27, 4, 255]], [[255, 0, 1], [2, 255, 255]]])
    ds = SIFTFlowDataset(tmp_path, "test")
    image, mask = ds[0]
    assert image.shape == (3, 2, 3) and mask.dtype == torch.int64 and np.array_equal(mask.numpy(), expected)
    assert [(h.name, h.num_classes) for h in ds.heads] == [("semantic", 33), ("geometric", 3)]
    assert ds.heads[1].class_names == ("sky", "horizontal", "vertical")
    assert ds.class_names[27] == "sky" and ds.num_classes == 33
    assert ds.normalization.name == "siftflow_bgr" and ds.normalization.mean == (114.578, 115.294, 108.353)
    semantic_map, geometric_map = split_targets(mask, len(ds.heads))
    assert np.array_equal(semantic_map.numpy(), expected[0]) and np.array_equal(geometric_map.numpy(), expected[1])


def test_scan_reports_bad_label_files_of_either_head(tmp_path):
    siftflow_tree(tmp_path, {"trainval": ["good_a", "good_b"]})
    write_item(tmp_path, "nogeo", parts=("image", "sem"))
    write_item(tmp_path, "wrongkey", key="labels")
    write_item(tmp_path, "geosize")
    write_item(tmp_path, "geosize", geometric=np.ones((9, 10), dtype=np.int16), parts=("geo",))
    write_item(tmp_path, "sem34", semantic=np.full((8, 10), 34, dtype=np.int16))
    write_item(tmp_path, "geo4", geometric=np.full((8, 10), 4, dtype=np.int16))
    names = ["good_a", "good_b", "nogeo", "wrongkey", "geosize", "sem34", "geo4"]
    (tmp_path / "trainval.txt").write_text("\n".join(names) + "\n")
    ds = SIFTFlowDataset(tmp_path, "trainval")
    found = {p.name: (p.kind, p.path) for p in ds.report.problems}
    sub = SUBFOLDER
    assert found == {
        "nogeo": ("missing_mask", f"Images/{sub}/nogeo.jpg"),
        "wrongkey": ("unreadable_mask", f"SemanticLabels/{sub}/wrongkey.mat"),
        "geosize": ("size_mismatch", f"GeoLabels/{sub}/geosize.mat"),
        "sem34": ("bad_labels", f"SemanticLabels/{sub}/sem34.mat"),
        "geo4": ("bad_labels", f"GeoLabels/{sub}/geo4.mat"),
    }
    messages = {p.name: p.message for p in ds.report.problems}
    assert f"GeoLabels/{sub}/nogeo.mat" in messages["nogeo"]
    assert "expected the key 'S'" in messages["wrongkey"]
    assert "outside the 33 classes" in messages["sem34"] and "label values 3 outside the 3 classes" in messages["geo4"]
    assert [ds.name(i) for i in range(len(ds))] == ["good_a", "good_b"]


def test_transforms_and_collate_move_both_label_maps_alike(tmp_path):
    image = torch.randn(3, 7, 9)
    semantic = torch.randint(0, 33, (7, 9))
    geometric = torch.randint(0, 3, (7, 9))
    mask = torch.stack([semantic, geometric])  # [2, H, W]
    for transform in (RandomMirror(p=1.0), RandomScale(1.5, 1.5), RandomCrop((5, 11))):
        transform.generator = torch.Generator().manual_seed(3)
        _, out_mask = transform(image, mask)
        singles = []
        for single in (semantic, geometric):  # each map alone, with the same random draws
            transform.generator = torch.Generator().manual_seed(3)
            singles.append(transform(image, single)[1])
        assert out_mask.shape[0] == 2 and torch.equal(out_mask, torch.stack(singles))
    images, masks = PadCollate()([(image, mask), (torch.randn(3, 5, 11), torch.zeros(2, 5, 11, dtype=torch.long))])
    assert images.shape == (2, 3, 7, 11) and masks.shape == (2, 2, 7, 11)
    assert torch.equal(masks[0, :, :, :9], mask) and (masks[0, :, :, 9:] == 255).all() and (masks[1, :, 5:] == 255).all()


def loop_scores(predictions, targets, num_classes, only_present=False):
    """The four metrics by a plain per-pixel loop (independent of the confusion matrix)."""
    hits, truth, guessed = [0] * num_classes, [0] * num_classes, [0] * num_classes
    for p, t in zip(predictions.ravel().tolist(), targets.ravel().tolist()):
        if t == 255:
            continue
        truth[t] += 1
        guessed[p] += 1
        hits[t] += p == t
    total = sum(truth)
    accs = [hits[c] / truth[c] for c in range(num_classes) if truth[c]]
    union = [truth[c] + guessed[c] - hits[c] for c in range(num_classes)]
    ious = {c: hits[c] / union[c] for c in range(num_classes) if union[c]}
    kept = [v for c, v in ious.items() if truth[c] or not only_present]
    return {
        "pixel_accuracy": sum(hits) / total,
        "mean_accuracy": sum(accs) / len(accs),
        "mean_iu": sum(kept) / len(kept),
        "frequency_weighted_iu": sum(truth[c] / total * ious[c] for c in range(num_classes) if truth[c]),
    }


def test_each_head_is_scored_like_a_per_pixel_loop_and_absent_classes_can_be_left_out():
    rng = np.random.default_rng(0)
    heads = [Head("semantic", tuple(f"c{i}" for i in range(6))), Head("geometric", ("sky", "horizontal", "vertical"))]
    scores = HeadScores(heads)
    batches = []
    for _ in range(3):
        semantic = rng.choice([0, 1, 2, 4, 255], size=(2, 5, 7))  # classes 3 and 5 never true
        geometric = rng.choice([0, 1, 2, 255], size=(2, 5, 7))
        predictions = [rng.integers(0, 6, (2, 5, 7)), rng.integers(0, 3, (2, 5, 7))]  # 3 and 5 predicted sometimes
        masks = torch.from_numpy(np.stack([semantic, geometric], axis=1))  # [N, 2, H, W]
        scores.update({"semantic": torch.from_numpy(predictions[0]), "geometric": torch.from_numpy(predictions[1])}, masks)
        batches.append((predictions, (semantic, geometric)))
    plain, left_out = scores.compute(), scores.compute(leave_out_absent=True)
    for k, head in enumerate(heads):
        preds = np.concatenate([b[0][k].ravel() for b in batches])
        targets = np.concatenate([b[1][k].ravel() for b in batches])
        for key, value in loop_scores(preds, targets, head.num_classes).items():
            assert math.isclose(plain[head.name][key], value, rel_tol=1e-12), (head.name, key)
        for key, value in loop_scores(preds, targets, head.num_classes, only_present=True).items():
            assert math.isclose(left_out[head.name][key], value, rel_tol=1e-12), (head.name, key)
    assert left_out["semantic"]["left_out"] == ["c3", "c5"] and "left_out" not in left_out["geometric"]
    assert left_out["semantic"]["mean_iu"] > plain["semantic"]["mean_iu"]  # the zero IUs of c3 and c5 are gone
    by_name = scores.compute(leave_out={"semantic": ["c3", 5]})
    assert by_name["semantic"]["mean_iu"] == left_out["semantic"]["mean_iu"]
    text = format_head_tables(left_out, heads)
    assert "== semantic (6 classes) ==" in text and "left out of the class means: c3, c5" in text and "== geometric" in text
    with pytest.raises(ConfigError, match="no class 'cow'"):
        scores.compute(leave_out={"semantic": ["cow"]})
    with pytest.raises(ConfigError, match="heads"):
        scores.compute(leave_out={"depth": [0]})


def test_the_reference_list_of_absent_test_classes_names_semantic_classes(tmp_path):
    siftflow_tree(tmp_path, {"test": ["a"]})
    head = SIFTFlowDataset(tmp_path, "test").heads[0]
    assert set(SIFTFLOW_ABSENT_FROM_TEST) <= set(head.class_names)
    scores = HeadScores([head])
    cow = head.class_names.index("cow")
    scores.update([torch.tensor([[0, 1, cow]])], torch.tensor([[0, 1, 2]]))  # a bird pixel taken for a cow
    plain = scores.compute()["semantic"]
    result = scores.compute(leave_out={"semantic": SIFTFLOW_ABSENT_FROM_TEST})["semantic"]
    assert math.isclose(plain["mean_iu"], (1 + 1 + 0 + 0) / 4)  # awning, balcony, bird, cow (IU 0: predicted, never true)
    assert result["left_out"] == ["cow", "desert", "moon"] and math.isclose(result["mean_iu"], 2 / 3)


def test_synthetic_siftflow_trains_and_scores_a_two_headed_toy_model_end_to_end(tmp_path):
    info = make_synthetic_layout(tmp_path, "siftflow", num_train=3, num_val=2, seed=0, size=(40, 48))
    assert info["splits"] == ["trainval", "test"] and detect_kind(tmp_path) == "siftflow"
    train = build_dataset("auto", tmp_path, "trainval", transform=RandomMirror())
    test = build_dataset("synthetic", tmp_path, "test")
    assert train.report.ok and len(train) == 3 and len(test) == 2
    # the two labelings agree: sky is sky, ground stuff is horizontal, objects are vertical, void is void in both
    sky = train.class_names.index("sky")
    ground = [train.class_names.index(n) for n in ("road", "grass", "sea", "sand", "field")]
    for i in range(3):
        semantic, geometric = train.load_raw(i).mask
        assert np.array_equal(semantic == 255, geometric == 255)
        assert (geometric[semantic == sky] == 0).all() and (geometric[np.isin(semantic, ground)] == 1).all()
        assert (geometric[(semantic != 255) & (semantic != sky) & ~np.isin(semantic, ground)] == 2).all()
    loader = torch.utils.data.DataLoader(train, batch_size=2, collate_fn=PadCollate())
    heads = train.heads
    model = torch.nn.ModuleDict({h.name: torch.nn.Conv2d(3, h.num_classes, 1) for h in heads})
    for images, masks in loader:
        targets = split_targets(masks, len(heads))
        loss = sum(
            torch.nn.functional.cross_entropy(model[h.name](images), t, ignore_index=255) for h, t in zip(heads, targets)
        )
        model.zero_grad()
        loss.backward()
        with torch.no_grad():  # plain SGD (torch.optim's first import alone takes seconds)
            for parameter in model.parameters():
                parameter -= 1e-3 * parameter.grad
        assert all(p.grad is not None for p in model.parameters())
    scores = HeadScores(heads)
    labelled = 0
    with torch.no_grad():
        for images, masks in torch.utils.data.DataLoader(test, batch_size=1, collate_fn=PadCollate()):
            scores.update({h.name: model[h.name](images).argmax(1) for h in heads}, masks)
            labelled += int((masks[:, 0] != 255).sum())
    results = scores.compute(leave_out_absent=True)
    assert set(results) == {"semantic", "geometric"} and results["semantic"]["pixels"] == labelled
    assert len(results["semantic"]["left_out"]) >= 33 - 11  # the scenes use 11 of the 33 classes
    assert all(0 <= results[h][k] <= 1 for h in results for k in ("pixel_accuracy", "mean_iu"))
