"""The one atomic writer, the one JSON writer and the byte formatter of fcnseg.files."""

import json
import math
import os
import stat

import numpy as np
import pytest
import torch

from fcnseg.files import (
    TEMP_GLOB,
    atomic_open,
    atomic_write,
    atomic_write_text,
    format_bytes,
    parse_bytes,
    sweep_temp_files,
    write_json,
)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_take_the_umask_mode_not_mkstemps_private_0600(tmp_path, umask_022):
    atomic_write_text("x", tmp_path / "a.txt")
    with atomic_open(tmp_path / "b.bin") as f:
        f.write(b"y")
    plain = tmp_path / "plain.txt"
    plain.write_text("z")  # what any other program would create
    assert mode(tmp_path / "a.txt") == mode(tmp_path / "b.bin") == mode(plain) == 0o644


def test_atomic_open_streams_seeks_and_renames_only_on_success(tmp_path):
    target = tmp_path / "probabilities.npy"
    with atomic_open(target) as f:
        f.write(b"\0" * 8)
        f.seek(2)
        f.write(b"ab")
        assert not target.exists()  # nothing visible until the block ends
    assert target.read_bytes() == b"\0\0ab\0\0\0\0"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as f:
            f.write("half")
            raise RuntimeError("killed")
    with pytest.raises(ValueError):
        atomic_write(target, lambda tmp: (tmp.write_text("half"), (_ for _ in ()).throw(ValueError("disk full"))))
    assert target.read_text() == "old"
    assert list(tmp_path.glob(TEMP_GLOB)) == []


def test_sweep_removes_what_a_killed_writer_left_and_nothing_else(tmp_path):
    (tmp_path / "sub").mkdir()
    left = [tmp_path / ".metrics.abc123.tmp.json", tmp_path / "sub" / ".last.x.tmp.pt"]
    keep = [tmp_path / "metrics.json", tmp_path / ".hidden", tmp_path / "sub" / "best.pt"]
    for p in left + keep:
        p.write_text("x")
    assert sorted(sweep_temp_files(tmp_path)) == [left[0]]
    assert sweep_temp_files(tmp_path, recursive=True) == [left[1]]
    assert all(p.exists() for p in keep) and not any(p.exists() for p in left)


def test_write_json_is_strict_json_with_nan_as_null_and_arrays_as_lists(tmp_path):
    value = {"mean_iu": math.nan, "inf": math.inf, "per_class": (0.5, float("nan")),
             "counts": np.array([1, 2]), "scalar": np.float32(0.25), "tensor": torch.tensor([[1, 2]]), 3: "key"}
    write_json(value, tmp_path / "r.json")
    text = (tmp_path / "r.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}")) == {
        "mean_iu": None, "inf": None, "per_class": [0.5, None], "counts": [1, 2], "scalar": 0.25,
        "tensor": [[1, 2]], "3": "key"}


@pytest.mark.parametrize(("text", "expected"), [("4GiB", 4 * 2**30), ("512M", 512 * 2**20), ("2.5g", int(2.5 * 2**30)),
                                                ("1000", 1000), (" 1 KiB ", 1024)])
def test_parse_bytes_reads_binary_units(text, expected):
    assert parse_bytes(text) == expected


def test_format_bytes_round_trips_through_parse_bytes_within_its_rounding():
    for n in (512, 1536, 3 * 2**20 + 12345, 7 * 2**30):
        assert abs(parse_bytes(format_bytes(n).replace(" ", "")) - n) <= 0.05 * n
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(100) == "100 B"
    with pytest.raises(ValueError, match="cannot read 'lots'"):
        parse_bytes("lots")
