"""train.compile: the decision (on, off, auto weighed against the run's length per CPU kind), the setting's
spelling in configs, the trainer's estimate of the run's length, and a compiled step equal to an eager one."""

import itertools
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import fcnseg.training.trainer as trainer_module
from fcnseg.config import TrainConfig, resolve_run_config
from fcnseg.errors import ConfigError
from fcnseg.precision import resolve_execution
from fcnseg.training.compile import MEASURED, CompileCost, compile_available, decide_compile
from fcnseg.training.loop import train_step
from fcnseg.training.optim import build_optimizer

PAYS = {("amx", "bf16"): CompileCost(speedup=1.25, compile_seconds=60.0, source="test")}  # break-even 300 s
NEVER = {("amx", "bf16"): CompileCost(speedup=0.9, compile_seconds=60.0, source="test")}


def test_off_never_compiles_and_on_always_does():
    assert not decide_compile("off", "amx", "bf16", 1e9, measured=PAYS).compile
    assert decide_compile("on", "other", "fp32", 1.0, measured={}).compile


def test_on_where_torch_compile_cannot_run_is_an_error_naming_why():
    with pytest.raises(ConfigError, match="no C\\+\\+ compiler"):
        decide_compile("on", "amx", "bf16", 1e9, unavailable="no C++ compiler (c++, g++ or clang++) on the PATH")


def test_auto_compiles_only_when_the_run_outlasts_the_break_even():
    assert PAYS[("amx", "bf16")].break_even_seconds() == pytest.approx(60 / (1 - 1 / 1.25))  # 300 s
    short = decide_compile("auto", "amx", "bf16", 299.0, measured=PAYS)
    long = decide_compile("auto", "amx", "bf16", 301.0, measured=PAYS)
    assert not short.compile and "pays after 5.0 min" in short.why and "this run is 5.0 min" in short.why
    assert long.compile and not long.waits


def test_auto_stays_eager_where_compile_was_slower_or_never_measured():
    assert NEVER[("amx", "bf16")].break_even_seconds() == math.inf
    slower = decide_compile("auto", "amx", "bf16", 1e9, measured=NEVER)
    assert not slower.compile and "0.90x" in slower.why and not slower.waits
    unmeasured = decide_compile("auto", "avx2", "fp32", 1e9, measured=PAYS)  # another kind, another precision
    assert not unmeasured.compile and "not measured" in unmeasured.why
    assert not decide_compile("auto", "amx", "fp32", 1e9, measured=PAYS).compile
    assert not decide_compile("auto", "amx", "bf16", 1e9, unavailable="no compiler", measured=PAYS).compile


def test_auto_waits_for_the_run_length_only_where_compile_could_pay():
    assert decide_compile("auto", "amx", "bf16", None, measured=PAYS).waits
    assert not decide_compile("auto", "amx", "bf16", None, measured=NEVER).waits


def test_the_measured_table_holds_real_figures():
    for (kind, precision), cost in MEASURED.items():
        assert precision in ("fp32", "bf16", "fp16") and cost.speedup > 0 and cost.compile_seconds > 0, (kind, cost)


@pytest.mark.parametrize(("given", "expected"), [(True, "on"), (False, "off"), ("auto", "auto"), ("on", "on")])
def test_train_compile_reads_yaml_booleans_as_on_and_off(given, expected):
    config = resolve_run_config(overrides={"train": {"compile": given}, "data": {"dataset": "synthetic", "root": ""}})
    assert config.train.compile == expected


def test_an_unknown_train_compile_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match="compile 'sometimes' is not one of auto, on, off"):
        resolve_run_config(overrides={"train": {"compile": "sometimes"}, "data": {"dataset": "synthetic", "root": ""}})


def _stub_trainer(budget, max_iter, iteration, train_seconds, setting="auto"):
    return SimpleNamespace(
        budget=budget, config=SimpleNamespace(train=SimpleNamespace(max_iter=max_iter, compile=setting)),
        state=SimpleNamespace(iteration=iteration, train_seconds=train_seconds), dist=SimpleNamespace(world_size=1),
        plan=SimpleNamespace(cpu="amx", precision="bf16"), compile_pending=True, net=nn.Identity())


@pytest.mark.parametrize(("budget", "max_iter", "iteration", "spent", "update_seconds", "expected"), [
    (600.0, 10, 0, 0.0, None, 600.0),  # a time budget: known before the first update
    (600.0, 10, 4, 100.0, 2.0, 500.0),  # ... what is left of it
    (None, 1000, 2, 1.0, 0.5, 499.0),  # max_iter: the updates left times one update's seconds
    (None, 1000, 0, 0.0, None, None),  # not known before an update is timed
])
def test_the_trainer_weighs_the_runs_remaining_length(monkeypatch, budget, max_iter, iteration, spent,
                                                     update_seconds, expected):
    seen = {}

    def fake_decide(setting, cpu, precision, expected_seconds, unavailable=""):
        seen["expected"] = expected_seconds
        return decide_compile(setting, cpu, precision, expected_seconds, measured=NEVER)

    monkeypatch.setattr(trainer_module, "decide_compile", fake_decide)
    stub = _stub_trainer(budget, max_iter, iteration, spent)
    trainer_module.Trainer.settle_compile(stub, update_seconds)
    assert seen["expected"] == (None if expected is None else pytest.approx(expected))
    assert stub.compile_pending is False and isinstance(stub.net, nn.Identity)  # NEVER: decided, stays eager


def test_the_trainer_compiles_its_net_when_the_decision_says_so(monkeypatch):
    monkeypatch.setattr(trainer_module, "decide_compile",
                        lambda *a, **k: decide_compile("auto", "amx", "bf16", 1e9, measured=PAYS))
    monkeypatch.setattr(trainer_module, "compile_available", lambda: "")
    monkeypatch.setattr(torch, "compile", lambda net: ("compiled", net))
    stub = _stub_trainer(600.0, 10, 0, 0.0)
    trainer_module.Trainer.settle_compile(stub, None)
    assert stub.net[0] == "compiled" and not stub.compile_pending


class TinyFCN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.score = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.score(torch.relu(self.conv(x)))


@pytest.mark.skipif(bool(compile_available()), reason=f"torch.compile cannot run here: {compile_available()}")
def test_a_compiled_training_step_gives_the_eager_loss_and_gradients():
    torch.manual_seed(0)
    eager = TinyFCN()
    compiled_model = TinyFCN()
    compiled_model.load_state_dict(eager.state_dict())
    images, masks = torch.randn(2, 3, 12, 12), torch.randint(0, 4, (2, 12, 12))
    recipe = TrainConfig(lr=0.0, batch_size=2, iter_size=1, layout="contiguous", precision="fp32")
    plan = resolve_execution("cpu", "fp32", "contiguous", purpose="training")
    results = []
    for model in (eager, torch.compile(compiled_model)):
        optimizer = build_optimizer(getattr(model, "_orig_mod", model), recipe)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        step = train_step(model, optimizer, scaler, itertools.repeat((images, masks)), recipe, 0, plan)
        results.append((step.loss, [p.grad.clone() for p in getattr(model, "_orig_mod", model).parameters()]))
    (loss_e, grads_e), (loss_c, grads_c) = results
    assert loss_c == pytest.approx(loss_e, rel=1e-5)
    for ge, gc in zip(grads_e, grads_c):
        torch.testing.assert_close(gc, ge, rtol=1e-4, atol=1e-6)


@pytest.mark.usefixtures("one_thread")  # tests/conftest.py
def test_a_max_iter_run_decides_after_its_second_update_and_logs_why(tmp_path, monkeypatch, caplog):
    seen = []

    def fake_decide(setting, cpu, precision, expected_seconds, unavailable=""):
        seen.append(expected_seconds)
        return decide_compile(setting, cpu, precision, expected_seconds, measured={(cpu, precision): PAYS[("amx", "bf16")]})

    monkeypatch.setattr(trainer_module, "decide_compile", fake_decide)
    settings = {
        "model": {"arch": "fcn8s", "backbone": "small", "num_classes": 6, "padding": "same", "batch_norm": True},
        "data": {"dataset": "synthetic", "root": "", "synthetic_train_images": 4, "synthetic_val_images": 1,
                 "synthetic_size": 32, "crop_size": 32, "num_workers": 0, "normalization": "imagenet_rgb"},
        "train": {"out_dir": str(tmp_path), "batch_size": 2, "iter_size": 1, "max_iter": 4, "val_every": 0,
                  "checkpoint_every": 0, "log_every": 1, "precision": "fp32", "num_panels": 0, "device": "cpu"},
    }
    with caplog.at_level("INFO", logger="fcnseg.training.trainer"):
        trainer_module.train(resolve_run_config(overrides=settings), progress=False)
    # before the first update the length is unknown (it waits); after the second, 2 updates left x its seconds
    assert seen[0] is None and len(seen) == 2 and 0 < seen[1] < 300
    assert any("training step: eager: torch.compile (1.25x after a 60-s compile" in r.getMessage() for r in caplog.records)
