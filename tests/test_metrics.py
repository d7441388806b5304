"""ConfusionMatrix and the paper's four metrics against a plain per-pixel loop."""

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from fcnseg.metrics import ConfusionMatrix, format_table

IGNORE = 255


def loop_metrics(pred: np.ndarray, gt: np.ndarray, n: int) -> dict:
    """The definitions of section 5 of the paper, one pixel at a time, in plain Python."""
    counts = [[0] * n for _ in range(n)]
    for p, g in zip(pred.ravel().tolist(), gt.ravel().tolist()):
        if g == IGNORE:
            continue
        counts[g][p] += 1
    t = [sum(counts[i]) for i in range(n)]
    predicted = [sum(counts[j][i] for j in range(n)) for i in range(n)]
    total = sum(t)
    acc_cls, ius = [], []
    for i in range(n):
        if t[i] > 0:
            acc_cls.append(counts[i][i] / t[i])
        union = t[i] + predicted[i] - counts[i][i]
        if union > 0:  # classes absent from both ground truth and prediction are left out
            ius.append(counts[i][i] / union)
    fw = sum(t[i] * counts[i][i] / (t[i] + predicted[i] - counts[i][i]) for i in range(n) if t[i] > 0) / total
    return {
        "pixel_accuracy": sum(counts[i][i] for i in range(n)) / total,
        "mean_accuracy": sum(acc_cls) / len(acc_cls),
        "mean_iu": sum(ius) / len(ius),
        "frequency_weighted_iu": fw,
        "counts": counts,
    }


def random_maps(seed: int, n: int = 7, shape=(3, 37, 41)):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, n - 2, size=shape)  # classes n-2 and n-1 never in the ground truth
    pred = rng.integers(0, n - 1, size=shape)  # class n-1 never predicted either: absent from both
    gt[rng.random(shape) < 0.1] = IGNORE
    agree = rng.random(shape) < 0.5  # make the scores non-trivial
    pred[agree & (gt != IGNORE)] = gt[agree & (gt != IGNORE)]
    return pred, gt


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_four_metrics_equal_a_per_pixel_loop_with_ignore_and_absent_classes(seed):
    n = 7
    pred, gt = random_maps(seed, n)
    cm = ConfusionMatrix(n)
    cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
    result = cm.compute()
    expected = loop_metrics(pred, gt, n)
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu"):
        assert result[key] == pytest.approx(expected[key], rel=1e-12), key
    assert result["confusion"] == expected["counts"]
    assert result["pixels"] == int((gt != IGNORE).sum())


def test_mean_iu_ignores_classes_absent_from_both():
    n = 7
    pred, gt = random_maps(0, n)
    result = ConfusionMatrix(n)
    result.update(torch.from_numpy(pred), torch.from_numpy(gt))
    result = result.compute()
    assert result["per_class_iu"][n - 1] is None  # absent from both: no IU
    assert result["per_class_iu"][n - 2] == 0.0  # predicted but not in the ground truth: IU 0, counted
    assert result["per_class_accuracy"][n - 2] is None  # not in the ground truth: no accuracy
    assert sum(v is not None for v in result["per_class_iu"]) == n - 1


def test_mean_iu_of_a_hand_counted_case_leaves_out_the_absent_class():
    # ground truth 0 0 1 1, prediction 0 1 1 1, class 2 nowhere: IU_0 = 1/2, IU_1 = 2/3.
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 1]))
    result = cm.compute()
    assert result["mean_iu"] == pytest.approx((1 / 2 + 2 / 3) / 2)  # not (1/2 + 2/3 + 0) / 3
    assert result["mean_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    assert result["frequency_weighted_iu"] == pytest.approx(0.5 * 1 / 2 + 0.5 * 2 / 3)
    assert result["pixel_accuracy"] == pytest.approx(3 / 4)


def test_confusion_matrix_summed_over_two_halves_equals_the_whole():
    pred, gt = random_maps(3, 5, shape=(4, 30, 30))
    pred, gt = torch.from_numpy(pred) % 5, torch.from_numpy(gt)
    whole = ConfusionMatrix(5)
    whole.update(pred, gt)
    first, second = ConfusionMatrix(5), ConfusionMatrix(5)
    first.update(pred[:2], gt[:2])
    second.update(pred[2:], gt[2:])
    assert torch.equal((first + second).counts, whole.counts)
    first += second
    assert torch.equal(first.counts, whole.counts)
    assert first.compute()["mean_iu"] == whole.compute()["mean_iu"]


def test_counts_are_int64_rows_ground_truth_columns_prediction():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 2, 2, 1]), torch.tensor([0, 1, IGNORE, 1]))
    assert cm.counts.dtype == torch.int64
    assert cm.counts.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]


def test_update_accepts_narrow_integer_dtypes():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[0, 1]], dtype=torch.uint8), torch.tensor([[0, 1]], dtype=torch.int32))
    assert cm.compute()["pixel_accuracy"] == 1.0


def test_prediction_outside_the_classes_is_rejected():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="outside 0..2"):
        cm.update(torch.tensor([3]), torch.tensor([0]))


def test_empty_matrix_gives_nan_metrics_not_an_error():
    result = ConfusionMatrix(4).compute()
    assert math.isnan(result["mean_iu"]) and math.isnan(result["pixel_accuracy"])
    assert result["per_class_iu"] == [None] * 4


def test_format_table_lists_metrics_and_every_class():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    table = format_table(cm.compute(), ["background", "cat", "dog"])
    assert "mean IU" in table and "f.w. IU" in table
    dog_line = next(line for line in table.splitlines() if line.startswith("dog"))
    assert dog_line.split()[1:] == ["-", "-"]  # absent from both
    assert "50.00" in next(line for line in table.splitlines() if line.startswith("cat"))


def _all_reduce_worker(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    pred, gt = random_maps(5, 6, shape=(4, 20, 20))
    cm = ConfusionMatrix(6)
    cm.update(torch.from_numpy(pred[rank::world]), torch.from_numpy(gt[rank::world]))
    cm.all_reduce()
    queue.put((rank, cm.counts.tolist()))
    dist.destroy_process_group()


def test_all_reduce_over_two_gloo_processes_equals_the_single_process_counts():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_all_reduce_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    pred, gt = random_maps(5, 6, shape=(4, 20, 20))
    whole = ConfusionMatrix(6)
    whole.update(torch.from_numpy(pred), torch.from_numpy(gt))
    assert results[0] == results[1] == whole.counts.tolist()


def test_all_reduce_without_distributed_is_a_no_op():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([1]), torch.tensor([1]))
    assert cm.all_reduce().counts.tolist() == [[0, 0], [0, 1]]


def test_collapse_warning_fires_on_an_all_background_validation_and_not_on_a_healthy_one():
    from fcnseg.metrics import collapse_warning

    truth = torch.zeros(100, 100, dtype=torch.int64)
    truth[:20, :20] = 1  # 4% object
    truth[50:60, 50:60] = 2  # 1% object
    collapsed = ConfusionMatrix(3)
    collapsed.update(torch.zeros_like(truth), truth)
    message = collapse_warning(collapsed.compute(), ["background", "cat", "dog"])
    assert message is not None and "'background' for 100.0% of its pixels" in message and "95.0% of the ground truth" in message
    healthy = ConfusionMatrix(3)
    prediction = truth.clone()
    prediction[:5, :5] = 0  # a few mistakes, but every class predicted
    healthy.update(prediction, truth)
    assert collapse_warning(healthy.compute(), ["background", "cat", "dog"]) is None
    # just under the threshold: 97.5% background predicted is not a collapse
    near = ConfusionMatrix(3)
    almost = torch.zeros_like(truth)
    almost[:5, :50] = 1  # 2.5% predicted as cat
    near.update(almost, truth)
    assert collapse_warning(near.compute()) is None


def test_class_pixel_counts_equal_a_per_pixel_loop_and_skip_ignore_and_out_of_range_values():
    from fcnseg.metrics import class_pixel_counts

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 5, size=(23, 19))
    labels[rng.random(labels.shape) < 0.1] = IGNORE
    labels[0, :3] = [-1, 7, 4]  # below 0 and at or above num_classes are not counted either
    expected = [0] * 5
    for value in labels.ravel().tolist():
        if 0 <= value < 5:
            expected[value] += 1
    counts = class_pixel_counts(labels.astype(np.int32), 5)
    assert counts.dtype == np.int64 and counts.tolist() == expected
    assert class_pixel_counts(np.zeros((0, 0), np.uint8), 3).tolist() == [0, 0, 0]
    assert class_pixel_counts(np.full((2, 2), 1, np.uint8), 3).tolist() == [0, 4, 0]
