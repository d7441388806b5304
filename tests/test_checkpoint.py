"""Our checkpoint format: round trips, atomic writes, and one clear error per kind of bad file."""

import builtins
import os
import pickle
import re

import pytest
import torch

import fcnseg.weights.checkpoint as checkpoint
from fcnseg.weights.checkpoint import atomic_save, load_checkpoint, load_model, save_checkpoint
from fcnseg.config import ModelConfig
from fcnseg.data.normalization import IMAGENET_RGB, PAPER_BGR
from fcnseg.errors import CheckpointError
from fcnseg.models import build_model

NAMES = ["background", "disc", "square"]


def small_model(arch="fcn8s", num_classes=3, seed=0):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch=arch, backbone="small", num_classes=num_classes))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"])
def test_round_trip_rebuilds_the_same_network(tmp_path, arch):
    model = small_model(arch)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, model.config, NAMES, IMAGENET_RGB, extra={"iteration": 7})
    loaded = load_model(path)
    assert loaded.config == model.config and loaded.class_names == NAMES
    assert loaded.normalization == IMAGENET_RGB and loaded.extra["iteration"] == 7
    assert not loaded.model.training
    x = torch.randn(2, 3, 37, 52)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x), atol=0, rtol=0)


def test_upsampling_trained_off_the_diagonal_survives_a_round_trip(tmp_path):
    model = small_model("fcn16s")
    with torch.no_grad():
        model.upscore2.weight.normal_()
    save_checkpoint(tmp_path / "m.pt", model, model.config, NAMES, PAPER_BGR)
    loaded = load_model(tmp_path / "m.pt")
    assert torch.equal(loaded.model.upscore2.weight, model.upscore2.weight)


def test_raw_state_dict_in_our_layout_is_understood(tmp_path):
    model = small_model("fcn16s")
    torch.save(model.state_dict(), tmp_path / "raw.pt")
    loaded = load_model(tmp_path / "raw.pt")
    assert loaded.config.arch == "fcn16s" and loaded.config.backbone == "small" and loaded.config.num_classes == 3


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt.*not found"):
        load_model(tmp_path / "nope.pt")


def _truncated_checkpoint(path):
    model = small_model()
    save_checkpoint(path, model, model.config, NAMES, PAPER_BGR)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


NOT_A_CHECKPOINT = r"not a PyTorch checkpoint \(corrupt, or another kind of file\)"


@pytest.mark.parametrize("kind, write, detail", [
    ("random bytes", lambda p: p.write_bytes(bytes(range(7, 256)) * 3), "starts with the bytes 07 08"),
    ("an HTML error page", lambda p: p.write_text(
        "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"),
     "HTML page"),
    ("an empty file", lambda p: p.write_bytes(b""), r"empty \(0 bytes\).*copy it again"),
    ("a PNG image", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200)), "starts with the bytes 89 50 4e 47"),
    ("a plain pickle", lambda p: p.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4)), "Python pickle"),
])
def test_a_file_that_is_not_a_checkpoint_is_named_so_and_not_called_code(tmp_path, kind, write, detail):
    path = tmp_path / "model.pt"
    write(path)
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    message = str(caught.value)
    assert re.search(rf"model\.pt: {NOT_A_CHECKPOINT}: .*{detail}", message), message
    assert "refused" not in message and "weights_only" not in message and "code" not in message


def _cut(path, keep):
    """Cut the file at ``path`` to ``keep(size)`` bytes; returns the new size."""
    data = path.read_bytes()
    path.write_bytes(data[: keep(len(data))])
    return keep(len(data))


@pytest.mark.parametrize("text", ["hello world\nthis is not a model\n", "model: fcn8s\nlr: 0.01\n", "e" + "x" * 50,
                                  "clé: valeur\n"])
def test_a_text_file_given_as_a_checkpoint_is_named_a_text_file(tmp_path, text):
    # torch's legacy loader tripped on these with KeyError: 101 or IndexError: pop from empty list
    path = tmp_path / "notes.pt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"notes\.pt: not a PyTorch checkpoint \(it starts like a text file"):
        load_model(path)


@pytest.mark.parametrize("keep", [lambda n: 5000, lambda n: n // 2, lambda n: n - 1])
def test_a_cut_zip_checkpoint_is_called_truncated_with_its_size(tmp_path, keep):
    # the first 5 KB failed with "cannot read ([Errno 22] Invalid argument)"
    path = tmp_path / "model.pt"
    model = small_model("fcn32s")
    save_checkpoint(path, model, model.config, NAMES, PAPER_BGR)
    size = _cut(path, keep)
    with pytest.raises(CheckpointError, match=rf"model\.pt: truncated: {size:,} bytes, .*copy the file again"):
        load_model(path)


@pytest.mark.parametrize("keep", [lambda n: 100, lambda n: 5000, lambda n: n // 2])
def test_a_cut_legacy_checkpoint_is_called_truncated_with_its_size(tmp_path, keep):
    # torch raised a bare RuntimeError("unexpected EOF, expected N more bytes")
    path = tmp_path / "legacy.pt"
    torch.save({"model_state_dict": small_model("fcn32s").state_dict()}, path, _use_new_zipfile_serialization=False)
    size = _cut(path, keep)
    with pytest.raises(CheckpointError, match=rf"legacy\.pt: truncated: {size:,} bytes, a legacy torch.save file"):
        load_model(path)


def test_an_uncut_legacy_checkpoint_still_loads(tmp_path):
    path = tmp_path / "legacy.pt"
    model = small_model("fcn32s")
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)
    assert load_model(path).config.arch == "fcn32s"


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("kind, write", [
    ("torch.save zip", lambda p: torch.save({"state_dict": {}, "payload": Payload()}, p)),
    ("torch.save zip, pickle protocol 4", lambda p: torch.save({"payload": Payload()}, p, pickle_protocol=4)),
    ("legacy torch.save", lambda p: torch.save({"payload": Payload()}, p, _use_new_zipfile_serialization=False)),
    ("plain pickle, protocol 0", lambda p: p.write_bytes(pickle.dumps(Payload(), protocol=0))),
    ("plain pickle, protocol 5", lambda p: p.write_bytes(pickle.dumps(Payload(), protocol=5))),
])
def test_a_pickle_that_would_run_code_is_refused_naming_the_callable(tmp_path, kind, write):
    path = tmp_path / "evil.pt"
    write(path)
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    message = str(caught.value)
    assert re.search(r"evil\.pt: refused to load: .*(posix|nt)\.system", message), message
    assert "weights_only" not in message  # never advise loading it anyway


def test_a_whole_pickled_model_is_refused_with_the_state_dict_hint(tmp_path):
    torch.save(small_model("fcn32s"), tmp_path / "whole.pt")
    with pytest.raises(CheckpointError, match=r"whole\.pt: refused.*state_dict\(\)"):
        load_model(tmp_path / "whole.pt")


@pytest.mark.parametrize("layout", ["fcnseg", "raw state dict", "pytorch-fcn wrapper"])
def test_load_model_reads_the_file_once(tmp_path, monkeypatch, layout):
    model = small_model("fcn16s")
    path = tmp_path / "model.pt"
    if layout == "fcnseg":
        save_checkpoint(path, model, model.config, NAMES, PAPER_BGR)
    elif layout == "raw state dict":
        torch.save(model.state_dict(), path)
    else:
        theirs = {k.removeprefix("backbone."): v for k, v in model.state_dict().items()}
        torch.save({"arch": "FCN16s", "model_state_dict": theirs}, path)
    opens, loads = [], []
    real_open, real_load = builtins.open, torch.load

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) == str(path):
            opens.append(args)
        return real_open(file, *args, **kwargs)

    def counting_load(*args, **kwargs):
        loads.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(torch, "load", counting_load)
    loaded = load_model(path)
    assert loaded.config.arch == "fcn16s"
    assert len(loads) == 1 and len(opens) == 1


def test_missing_keys_are_listed(tmp_path):
    model = small_model()
    sd = model.state_dict()
    del sd["score_pool3.weight"]
    torch.save(sd, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="partial.pt.*missing.*score_pool3.weight"):
        load_model(tmp_path / "partial.pt")


def test_wrong_number_of_classes_in_our_checkpoint_is_named(tmp_path):
    model = small_model(num_classes=3)
    ckpt = checkpoint.checkpoint_dict(model, model.config, NAMES, PAPER_BGR)
    ckpt["model_config"]["num_classes"] = 5
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad.pt.*score_fr.weight is \[3, 256, 1, 1\], expected \[5, 256, 1, 1\]"):
        load_model(tmp_path / "bad.pt")


def test_asking_for_another_arch_than_the_file_holds_is_an_error(tmp_path):
    torch.save(small_model("fcn32s").state_dict(), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="fcn32s.*fcn8s"):
        load_model(tmp_path / "m.pt", arch="fcn8s")


def test_imagenet_classifier_is_pointed_to_the_surgery_path(tmp_path):
    torch.save({"features.0.weight": torch.zeros(1), "classifier.0.weight": torch.zeros(1)}, tmp_path / "vgg.pth")
    with pytest.raises(CheckpointError, match="classifier"):
        load_model(tmp_path / "vgg.pth")


def test_load_checkpoint_rejects_foreign_dicts(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt.*not an fcnseg checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_atomic_save_keeps_the_previous_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"iteration": torch.tensor(1)}, path)

    def failing_save(obj, f):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"iteration": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind
