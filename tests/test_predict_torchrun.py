"""`fcnseg predict` under torchrun: two gloo processes segment each image once, the union equals one process's run, a killed run resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from fcnseg.cli import main
from fcnseg.inference.manifest import read_manifest
from tests.cluster_support import (assert_same_label_maps, env_without_torchrun, kill_group, wait_for, write_checkpoint,
                                   write_images)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A checkpoint, 12 tiny images and a broken one, and one process's outputs to compare with."""
    root = tmp_path_factory.mktemp("torchrun")
    checkpoint = write_checkpoint(root / "model.pt")
    images = root / "in"
    names = write_images(images, 12, corrupt=True)
    single = root / "single"
    assert main(["predict", str(checkpoint), str(images), "-o", str(single), "--precision", "fp32", "--layout",
                 "contiguous", "--workers", "0", "--no-progress"]) == 1  # the broken image
    return {"checkpoint": checkpoint, "images": images, "names": names, "single": single}


def torchrun(setup, out, *extra, popen=False):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "fcnseg", "predict", str(setup["checkpoint"]), str(setup["images"]), "-o", str(out),
               "--precision", "fp32", "--layout", "contiguous", "--workers", "0", "--no-progress", *extra]
    if popen:
        return subprocess.Popen(command, env=env_without_torchrun(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    return subprocess.run(command, env=env_without_torchrun(), capture_output=True, text=True, timeout=240)


def test_two_processes_segment_each_image_once_and_their_union_equals_one_process(setup, tmp_path):
    out = tmp_path / "out"
    done = torchrun(setup, out, "--stats")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]  # the broken image
    assert "12 segmented, 0 already done, 1 failed" in done.stdout and "broken.jpg" in done.stdout
    assert_same_label_maps(out, setup["single"])
    rows = read_manifest(out / "manifest.parquet")
    assert sorted(r.image for r in rows) == sorted(setup["names"] + ["broken.jpg"])
    by_name = {r.image: r for r in rows}
    assert by_name["broken.jpg"].status == "failed" and by_name["broken.jpg"].error
    assert all(r.status == "done" and sum(r.class_pixels) == 40 * 56 for r in rows if r.image != "broken.jpg")
    assert not list(out.rglob(".*.tmp*"))


def test_a_rank_killed_mid_run_then_rerun_completes_the_set(setup, tmp_path):
    out = tmp_path / "out"
    # A half-written output of an earlier run: an overlay's temp file, which the re-run sweeps.
    out.mkdir()
    (out / ".img000.abc.tmp.png").write_bytes(b"half")
    process = torchrun(setup, out, popen=True)
    try:
        assert wait_for(lambda: any(out.rglob("*_labels.png")), timeout=120), "no label map appeared"
        victims = [pid for pid in _children(process.pid) if _environ(pid).get("RANK") == "1"]
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        returncode = process.wait(timeout=120)
    finally:
        kill_group(process)
    if victims:
        assert returncode != 0
    rerun = torchrun(setup, out)
    assert rerun.returncode == 1, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert_same_label_maps(out, setup["single"])
    assert not (out / ".img000.abc.tmp.png").exists()


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid``."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


def _environ(pid: int) -> dict:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            items = f.read().split(b"\0")
    except OSError:
        return {}
    return dict(item.decode(errors="replace").split("=", 1) for item in items if b"=" in item)


def test_without_pyarrow_the_manifest_is_a_csv_with_a_column_per_class(tmp_path, monkeypatch):
    import csv

    from fcnseg.inference import manifest as M

    monkeypatch.setattr(M, "have_parquet", lambda: False)
    rows = [M.ManifestRow("b.jpg", "in/b.jpg", "failed", error="empty file (0 bytes)"),
            M.ManifestRow("a.jpg", "in/a.jpg", "done", 2, 3, [4, 2], 0.25)]
    path = M.write_manifest(rows, ["sky", "road"], tmp_path)
    assert path.name == "manifest.csv"
    table = list(csv.DictReader(open(path)))
    assert [r["image"] for r in table] == ["a.jpg", "b.jpg"]
    assert (table[0]["sky_pixels"], table[0]["road_pixels"], table[0]["seconds"]) == ("4", "2", "0.2500")
    assert table[1]["error"] == "empty file (0 bytes)" and table[1]["sky_pixels"] == ""


def test_confidence_table_and_annotations_cover_every_rank_s_images(setup, tmp_path):
    out = tmp_path / "out"
    done = torchrun(setup, out, "--confidence", "--save-annotations", "coco")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]  # the broken image
    rows = (out / "confidence.csv").read_text().splitlines()[1:]
    assert sorted(row.split(",")[0] for row in rows) == setup["names"]  # both ranks' images, once each
    assert len(list(out.rglob("*_confidence.npy"))) == len(setup["names"])
    import json

    coco = json.loads(next((out / "coco").glob("*.json")).read_text())
    assert sorted(image["file_name"] for image in coco["images"]) == setup["names"]
