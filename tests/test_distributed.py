"""Two CPU processes under torchrun (gloo) train exactly what one process trains on the same global batch."""

import os
import subprocess
import sys

import pytest
import torch
import yaml

from fcnseg import distributed as D
from fcnseg.weights.checkpoint import load_checkpoint
from fcnseg.config import resolve_run_config
from fcnseg.models import build_model
from fcnseg.training.sampling import EpochSampler
from fcnseg.training.trainer import train


def settings(out_dir, batch_size, batch_norm=False, channels_last=False):
    """Dropout 0 (per-process masks differ by design); augmentation stays on, seeded per item.

    The BatchNorm net takes a smaller step: at 0.05 its loss leaps (1.8 -> 24), and a diverging run
    amplifies the float rounding of sums taken in another order beyond any useful tolerance. The layout
    is pinned, not left to ``auto``: NHWC kernels sum in another order again (checked on its own below).
    """
    return {
        "model": {"arch": "fcn8s", "backbone": "small", "num_classes": 6, "dropout": 0.0, "batch_norm": batch_norm},
        "data": {"dataset": "synthetic", "root": "", "synthetic_train_images": 8, "synthetic_val_images": 3,
                 "synthetic_size": 48, "crop_size": 40, "num_workers": 0, "normalization": "imagenet_rgb"},
        "train": {"out_dir": str(out_dir), "optimizer": "sgd", "lr": 0.01 if batch_norm else 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                  "batch_size": batch_size, "iter_size": 2, "max_iter": 3, "val_every": 0, "checkpoint_every": 0,
                  "log_every": 1, "precision": "fp32", "num_panels": 1, "seed": 11, "device": "cpu",
                  "layout": "channels_last" if channels_last else "contiguous"},
    }


def test_sampler_splits_one_process_order_between_ranks():
    data = list(range(10))
    single = list(EpochSampler(data, 1, 0, shuffle=True, seed=3))
    ranks = [list(EpochSampler(data, 2, r, shuffle=True, seed=3)) for r in (0, 1)]
    assert sorted(single) == data
    for step in range(0, 10, 4):  # global batch 4 = 2 per rank
        assert sorted(ranks[0][step // 2 : step // 2 + 2] + ranks[1][step // 2 : step // 2 + 2]) == sorted(single[step : step + 4])


def test_single_process_helpers_are_identities():
    assert D.get_world_size() == 1 and D.get_rank() == 0 and D.is_main()
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(D.all_reduce_sum(t), torch.tensor([1.0, 2.0]))
    assert D.all_gather_objects({"a": 1}) == [{"a": 1}]
    D.barrier()


# NHWC (what layout "auto" takes to train on AVX-512 CPUs): DDP buckets the NHWC gradients. Checked on the
# plain net: with BatchNorm, one NHWC process (CPU BatchNorm's NHWC kernel, ~10x the rounding of NCHW) and
# two (SyncBatchNorm) part by a few % in bn1_1.bias within this short, leaping run: rounding, not meaning.
@pytest.mark.parametrize(("batch_norm", "channels_last", "rtol"), [(False, False, 1e-5), (True, False, 1e-5), (False, True, 1e-5)],
                         ids=["plain", "batchnorm", "plain-channels_last"])
def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path, batch_norm, channels_last, rtol):
    """With BatchNorm, the statistics are those of the global batch: running means and variances match too."""
    config_file = tmp_path / "ddp.yaml"
    config_file.write_text(yaml.safe_dump(settings(tmp_path / "ddp", batch_size=2, batch_norm=batch_norm,
                                                   channels_last=channels_last)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "fcnseg", "train", "--config", str(config_file), "--no-progress"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "process 1 of 2 joined the gloo group" in done.stderr

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(resolve_run_config(overrides=settings(tmp_path / "single", batch_size=4, batch_norm=batch_norm,
                                                             channels_last=channels_last)), progress=False)
    finally:
        torch.set_num_threads(threads)

    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    one = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")
    assert ddp["train_state"]["world_size"] == 2
    torch.testing.assert_close(ddp["train_state"]["losses"], one["train_state"]["losses"], rtol=rtol, atol=1e-6)
    moved = 0.0
    initial = build_model(single.config.model).state_dict()
    for key, value in one["state_dict"].items():
        torch.testing.assert_close(ddp["state_dict"][key], value, rtol=max(1e-4, rtol), atol=1e-6, msg=key)
        moved = max(moved, (value - initial[key]).abs().max().item()) if key.startswith("score") else moved
    assert moved > 1e-3, "the score layers should have moved away from zero"
    # validation: confusion counts summed over the two shards equal the single-process counts
    ddp_val, one_val = ddp["train_state"]["history"][-1], one["train_state"]["history"][-1]
    assert ddp_val["pixels"] == one_val["pixels"]
    assert ddp_val["mean_iu"] == pytest.approx(one_val["mean_iu"], abs=1e-3)
