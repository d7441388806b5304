"""`fcnseg predict --engine ray` / segment_with_ray: the same label maps as one process, each image once, through a killed
actor, a corrupt image, a killed driver and a two-node cluster; and the sizing rules."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fcnseg.cli import main
from fcnseg.errors import ConfigError
from fcnseg.inference.manifest import read_manifest
from fcnseg.inference.ray_engine import as_source, list_items, plan_resources
from tests.cluster_support import (assert_same_label_maps, env_without_torchrun, kill_group, label_maps, wait_for,
                                   write_checkpoint, write_images)

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'fcnseg[ray]'); CI installs it with .[dev]")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'fcnseg[ray]')")

from fcnseg.inference.ray_engine import segment_with_ray  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
FP32 = {"precision": "fp32", "layout": "contiguous", "progress": False}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A checkpoint, 10 tiny images and a broken one, and one process's outputs (plain fcnseg predict) to compare with."""
    root = tmp_path_factory.mktemp("ray")
    checkpoint = write_checkpoint(root / "model.pt")
    images = root / "in"
    names = write_images(images, 10, corrupt=True)
    single = root / "single"
    assert main(["predict", str(checkpoint), str(images), "-o", str(single), "--precision", "fp32", "--layout",
                 "contiguous", "--workers", "0", "--no-progress"]) == 1  # the broken image
    return {"checkpoint": checkpoint, "images": images, "names": names, "single": single}


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def check_manifest(out: Path, names: list[str]) -> dict:
    rows = read_manifest(out / "manifest.parquet")
    assert sorted(r.image for r in rows) == sorted(names + ["broken.jpg"])  # each image once
    by_name = {r.image: r for r in rows}
    assert by_name["broken.jpg"].status == "failed" and "cannot read" in by_name["broken.jpg"].error
    for name in names:
        row = by_name[name]
        assert row.status == "done" and (row.height, row.width) == (40, 56) and sum(row.class_pixels) == 40 * 56
    assert not (out / "manifest.parts").exists() and not list(out.rglob(".*.tmp*"))
    return by_name


def test_labels_equal_one_process_each_image_once_and_a_corrupt_image_is_recorded(setup, local_ray, tmp_path):
    out = tmp_path / "out"
    report = segment_with_ray(setup["checkpoint"], [setup["images"]], out, batch_size=3, **FP32)
    assert report.processed == 10 and report.skipped_existing == 0
    assert [Path(source).name for source, _ in report.failed] == ["broken.jpg"]
    assert_same_label_maps(out, setup["single"])
    rows = check_manifest(out, setup["names"])
    assert all(rows[n].seconds > 0 for n in setup["names"])



def _actor_pids() -> list[int]:
    """This machine's processes running a model actor (Ray titles them ray::MapWorker(MapBatches(_Segmenter)))."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if b"_Segmenter" in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_an_actor_killed_mid_run_still_gives_every_image_once(setup, local_ray, tmp_path):
    out = tmp_path / "out"
    killed = []

    def kill_first_actor():
        if wait_for(lambda: any(out.rglob("*_labels.png")) and _actor_pids(), timeout=90, every=0.02):
            for pid in _actor_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    killer = threading.Thread(target=kill_first_actor)
    killer.start()
    report = segment_with_ray(setup["checkpoint"], [setup["images"]], out, batch_size=1, **FP32)
    killer.join()
    assert killed, "no actor was found to kill"
    assert report.processed + report.skipped_existing == 10
    assert_same_label_maps(out, setup["single"])
    check_manifest(out, setup["names"])


def test_a_killed_driver_resumes_from_its_outputs_and_manifest(setup, local_ray, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "fcnseg", "predict", str(setup["checkpoint"]), str(setup["images"]), "-o", str(out),
               "--engine", "ray", "--precision", "fp32", "--layout", "contiguous", "--batch-size", "1", "--no-progress"]
    env = {**env_without_torchrun(), "RAY_USAGE_STATS_ENABLED": "0"}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_for(lambda: len(label_maps(out)) >= 1, timeout=120), "the driver wrote nothing"
    finally:
        kill_group(driver)
    first = len(label_maps(out))
    report = segment_with_ray(setup["checkpoint"], [setup["images"]], out, batch_size=2, **FP32)
    assert report.skipped_existing >= first and report.processed + report.skipped_existing == 10
    assert_same_label_maps(out, setup["single"])
    check_manifest(out, setup["names"])


def test_a_two_node_cluster_segments_each_image_once(setup, tmp_path):
    from ray.cluster_utils import Cluster

    ray.shutdown()  # the local Ray of the tests above
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=2)
        ray.init(address=cluster.address, logging_level="WARNING")
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        out = tmp_path / "out"
        # stack=True: same-size images of a batch in one forward, the GPU path, here on CPU actors
        report = segment_with_ray(setup["checkpoint"], [setup["images"]], out, actors=2, batch_size=3, stack=True, **FP32)
        assert report.plan.actors == 2 and report.processed == 10
        assert_same_label_maps(out, setup["single"])
        check_manifest(out, setup["names"])
    finally:
        ray.shutdown()
        cluster.shutdown()


# --- no cluster needed ---------------------------------------------------------------------------------


def test_a_resumed_run_keeps_earlier_rows_and_rebuilds_missing_ones_from_the_label_maps(tmp_path):
    """The driver's record: rows of an earlier manifest and of a killed driver's parts are kept; an image done
    without a row (the driver died before saving it) gets one from its label map; the parts go."""
    import numpy as np

    from fcnseg.data.palette import write_mask_png
    from fcnseg.inference.manifest import ManifestRow, write_manifest, write_parquet
    from fcnseg.inference.ray_engine import Item, _Manifest

    out = tmp_path / "out"
    labels = {name: np.random.default_rng(i).integers(0, 4, (6, 9)).astype(np.uint8) for i, name in enumerate("abc")}
    for name, mask in labels.items():
        write_mask_png(mask, out / f"{name}_labels.png")
    rows = {name: ManifestRow(name, f"in/{name}.jpg", "done", 6, 9, np.bincount(labels[name].ravel(), minlength=4).tolist(),
                              0.5 + i) for i, name in enumerate("ab")}
    write_manifest([rows["a"], ManifestRow("b", "in/b.jpg", "failed", error="was broken")], list("wxyz"), out)
    (out / "manifest.parts").mkdir()
    write_parquet([rows["b"]], list("wxyz"), out / "manifest.parts" / "0-1.parquet")  # b done later
    record = _Manifest(out, list("wxyz"))
    items = [Item(f"in/{n}.jpg", n, str(out / n)) for n in "abcd"]
    path, merged = record.finish(items, [("in/e.jpg", "no such file or folder")])
    by_name = {r.image: r for r in read_manifest(path)}
    assert by_name["a"] == rows["a"] and by_name["b"] == rows["b"]
    assert by_name["c"].status == "done" and by_name["c"].seconds is None
    assert by_name["c"].class_pixels == np.bincount(labels["c"].ravel(), minlength=4).tolist()
    assert by_name["d"].status == "failed" and "not segmented" in by_name["d"].error
    assert by_name["e.jpg"].error == "no such file or folder"
    assert not (out / "manifest.parts").exists() and len(merged) == 5


def test_same_size_images_stacked_into_one_forward_give_each_image_s_own_labels(tmp_path):
    import numpy as np

    from fcnseg.data.synthetic import generate_sample
    from fcnseg.inference.predictor import Predictor
    from fcnseg.inference.ray_engine import forward_stacked, stacked_groups

    predictor = Predictor.from_checkpoint(write_checkpoint(tmp_path / "m.pt"), precision="fp32", layout="contiguous")
    images = [generate_sample(2, "val", i, size=(40, 56) if i != 2 else (48, 40)).image for i in range(5)]
    groups = stacked_groups(predictor, images, max_stack=3)
    assert sorted(map(sorted, groups)) == [[0, 1, 3], [2], [4]]  # 3 at most; the odd size alone
    for group in groups:
        for k, labels in zip(group, forward_stacked(predictor, [images[k] for k in group])):
            expected = predictor.predict(images[k]).labels
            assert labels.shape == expected.shape and (labels == expected).mean() > 0.999
    # a budget that holds one forward at a time, or test-time augmentation: one image per forward
    from fcnseg.inference.tta import parse_tta

    one = predictor.estimate(64, 64)  # 40x56 on the 32-pixel grid
    predictor.max_memory = one.total + 4 * 40 * 56 + 1000
    assert all(len(g) == 1 for g in stacked_groups(predictor, images, max_stack=3))
    predictor.max_memory, predictor.tta = None, parse_tta("flip")
    assert all(len(g) == 1 for g in stacked_groups(predictor, images, max_stack=3))


def test_the_plan_follows_the_cluster_and_the_flags():
    cpu = plan_resources(16, 0, 16)
    assert (cpu.actors, cpu.cpus_per_actor, cpu.threads, cpu.gpus_per_actor, cpu.batch_size) == (3, 4, 4, 0, 4)
    small = plan_resources(2, 0, 2)
    assert (small.actors, small.cpus_per_actor, small.threads) == (1, 1, 1) and not small.note
    gpu = plan_resources(32, 4, 16)
    assert (gpu.actors, gpu.gpus_per_actor, gpu.cpus_per_actor, gpu.batch_size) == (4, 1, 1, 8)
    forced = plan_resources(2, 0, 2, actors=2)  # more than fit: smaller reservations, the same threads
    assert forced.actors == 2 and forced.threads == 1 and 2 * forced.cpus_per_actor <= 2 - 0.5 and forced.note
    assert plan_resources(8, 0, 8, cpus_per_actor=2, batch_size=1).actors == 3
    with pytest.raises(ConfigError, match="--gpus-per-actor 1: the cluster has 0 GPUs"):
        plan_resources(8, 0, 8, gpus_per_actor=1)
    with pytest.raises(ConfigError, match="--actors must be at least 1"):
        plan_resources(8, 0, 8, actors=0)


def test_list_files_and_uris_name_outputs_below_their_common_folder(tmp_path):
    root = tmp_path / "data"
    write_images(root, 4)
    listing = tmp_path / "todo.txt"
    listing.write_text("# two of them\ndata/img000.jpg\n\ndata/sub/img002.png\n")
    out = tmp_path / "out"
    items, failed = list_items([listing, f"file://{root}"], out)
    by_source = {i.source: i for i in items}
    assert by_source[str(tmp_path / "data/img000.jpg")].name == "img000.jpg"
    assert by_source[str(tmp_path / "data/sub/img002.png")].stem == str(out / "sub/img002")
    # the same images by URI clash with the list file's outputs: reported, not written twice
    assert sorted(reason for _, reason in failed) == sorted(
        [f"its outputs would overwrite those of {tmp_path / 'data/img000.jpg'} (same name, other suffix)",
         f"its outputs would overwrite those of {tmp_path / 'data/sub/img002.png'} (same name, other suffix)"])
    assert as_source(Path("s3://bucket/photos")) == "s3://bucket/photos"
    assert as_source(Path("photos/a.jpg")) == "photos/a.jpg"


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    import builtins

    from fcnseg.inference import ray_engine

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ConfigError, match=r"pip install 'fcnseg\[ray\]'"):
        ray_engine.import_ray()
    assert main(["predict", str(tmp_path / "m.pt"), str(tmp_path), "-o", str(tmp_path.parent / "o"), "--engine", "ray"]) != 0
    assert "pip install 'fcnseg[ray]'" in capsys.readouterr().err


def test_ray_flags_without_the_ray_engine_are_refused(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "m.pt"), str(tmp_path), "-o", str(tmp_path.parent / "o2"), "--actors", "2"]) != 0
    assert "--actors is for --engine ray" in capsys.readouterr().err


@pytest.mark.parametrize("flags, says", [(["--confidence"], "--confidence is not written by --engine ray"),
                                         (["--save-annotations", "coco"], "fcnseg export-annotations")])
def test_outputs_the_ray_engine_does_not_write_are_refused_with_the_remedy(tmp_path, capsys, flags, says):
    (tmp_path / "in").mkdir()
    code = main(["predict", str(tmp_path / "m.pt"), str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--engine", "ray",
                 *flags])
    assert code != 0 and says in capsys.readouterr().err


def test_segment_with_ray_is_public_and_importing_it_leaves_ray_unloaded():
    code = ("import sys, fcnseg, fcnseg.inference as inference; "
            "assert fcnseg.segment_with_ray is inference.segment_with_ray; assert 'ray' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], env=env_without_torchrun(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_actors_on_a_node_share_one_copy_of_the_model_so_the_runtime_choice_is_measured_once(tmp_path, monkeypatch):
    from fcnseg.inference.ray_engine import _node_copy

    monkeypatch.setenv("FCNSEG_CACHE_DIR", str(tmp_path))
    first = _node_copy(b"model bytes", "m.pt")
    stamp = first.stat().st_mtime_ns
    second = _node_copy(b"model bytes", "m.pt")
    assert second == first and second.stat().st_mtime_ns == stamp  # same file, not rewritten: the cache key holds
    assert _node_copy(b"other model", "m.pt") != first and first.read_bytes() == b"model bytes"
