"""The execution plan from what the CPU has: each kind of CPU, the ISA caps, the log line, legacy layout settings."""

import logging

import pytest
import torch

import fcnseg.precision as precision
from conftest import CPUINFO
from fcnseg.commands.train import overrides_from_args
from fcnseg.config import RunConfig, resolve_run_config
from fcnseg.data.normalization import IMAGENET_RGB
from fcnseg.errors import ConfigError
from fcnseg.inference.predictor import Predictor
from fcnseg.models import ModelConfig, build_model

CPU = torch.device("cpu")


@pytest.mark.parametrize(("name", "native", "flags"), [
    ("avx2", False, {"avx2"}),
    ("avx512", False, {"avx2", "avx512f", "avx512_vnni"}),
    ("avx512_bf16", True, {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}),
    ("amx", True, {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"}),
    ("other", False, set()),
])
def test_the_cpuinfo_flags_name_the_kind_and_whether_bf16_is_native(name, native, flags):
    kind = precision.kind_from_cpuinfo(CPUINFO[name], env={})
    assert kind.name == name and kind.native_bf16 is native
    assert kind.flags == flags  # the relevant ones only (amx_int8, fpu... left out)
    assert kind.model == CPUINFO[name].split("model name\t: ")[1].split("\n")[0]


# The rules, each backed by a measurement (docs/inference.md "How the precision and layout are chosen",
# docs/training.md): (kind, purpose) -> (precision, layout).
RULES = [
    ("avx2", "inference", "fp32", "channels_last"),
    ("avx2", "training", "fp32", "contiguous"),
    ("avx512", "inference", "fp32", "contiguous"),
    ("avx512", "training", "fp32", "channels_last"),
    ("avx512_bf16", "inference", "bf16", "channels_last"),
    ("avx512_bf16", "training", "bf16", "channels_last"),
    ("amx", "inference", "bf16", "channels_last"),
    ("amx", "training", "bf16", "channels_last"),
    ("other", "inference", "fp32", "contiguous"),
    ("other", "training", "fp32", "contiguous"),
]


@pytest.mark.parametrize(("name", "purpose", "expected_precision", "expected_layout"), RULES)
def test_auto_plan_per_kind_of_cpu_and_purpose(fake_cpu, monkeypatch, name, purpose, expected_precision, expected_layout):
    # mkldnn calls bf16 "supported" on every AVX-512 CPU, native or not: the plan must not listen to it
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    fake_cpu(name)
    plan = precision.resolve_execution("cpu", purpose=purpose)
    assert (plan.precision, plan.layout, plan.cpu) == (expected_precision, expected_layout, name)
    assert plan.autocast_dtype == (torch.bfloat16 if expected_precision == "bf16" else None)
    assert plan.channels_last is (expected_layout == "channels_last")
    # the older entry points answer from the same facts (they speak of inference)
    inference = precision.resolve_execution("cpu", purpose="inference").precision
    assert precision.resolve_precision("auto", CPU) == inference
    assert precision.cpu_has_native_bf16() is (inference == "bf16")
    assert precision.select_layout(CPU, expected_precision, purpose=purpose) == expected_layout


def test_amx_trains_and_infers_in_bf16_and_fp32_training_can_be_asked_for(fake_cpu, caplog):
    fake_cpu("amx")
    training = precision.resolve_execution("cpu", purpose="training")
    assert (training.precision, training.layout) == ("bf16", "channels_last")
    assert "natively" in training.why
    assert precision.resolve_execution("cpu", purpose="inference").precision == "bf16"
    forced = precision.resolve_execution("cpu", "fp32", purpose="training")
    assert (forced.precision, forced.layout) == ("fp32", "channels_last")


def test_avx512_without_bf16_is_fp32_even_though_mkldnn_says_bf16_is_supported(fake_cpu, monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    fake_cpu("avx512")
    plan = precision.resolve_execution("cpu")
    assert plan.precision == "fp32" and plan.autocast_dtype is None
    assert "emulates bf16" in plan.why


def test_forced_bf16_on_a_cpu_without_native_bf16_still_runs_it_and_warns(fake_cpu, caplog):
    fake_cpu("avx512")
    with caplog.at_level(logging.WARNING, logger="fcnseg.precision"):
        plan = precision.resolve_execution("cpu", "bf16", purpose="training")
    assert plan.precision == "bf16" and plan.autocast_dtype == torch.bfloat16 and plan.channels_last
    assert "no native bf16" in caplog.text and "Gold 6248" in caplog.text


def test_explicit_layout_wins_over_the_rule(fake_cpu):
    fake_cpu("avx2")
    assert precision.resolve_execution("cpu", "fp32", "contiguous").layout == "contiguous"
    assert precision.resolve_execution("cpu", "fp32", "channels_last", purpose="training").layout == "channels_last"


def test_cuda_plan_is_fp16_channels_last_and_fp32_contiguous(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    plan = precision.resolve_execution("auto", local_rank=1)
    assert (str(plan.device), plan.precision, plan.layout, plan.cpu) == ("cuda:1", "fp16", "channels_last", "cuda")
    assert plan.autocast_dtype == torch.float16
    assert precision.resolve_execution("cuda", "fp32").layout == "contiguous"


@pytest.mark.parametrize(("cpu", "env", "expected"), [
    ("amx", {"ATEN_CPU_CAPABILITY": "avx2"}, "avx2"),
    ("avx512", {"ATEN_CPU_CAPABILITY": "default"}, "avx2"),
    ("amx", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, "avx512"),
    ("amx", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, "avx512_bf16"),
    ("avx512_bf16", {"DNNL_MAX_CPU_ISA": "AVX2_VNNI"}, "avx2"),
    ("avx512_bf16", {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "ALL"}, "avx512_bf16"),
    ("avx2", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, "avx2"),  # a cap never raises what the flags say
])
def test_isa_caps_in_the_environment_lower_the_kind_to_what_the_kernels_run(cpu, env, expected):
    kind = precision.kind_from_cpuinfo(CPUINFO[cpu], env=env)
    assert kind.name == expected
    assert bool(kind.cap) is (expected != cpu)
    if kind.cap:
        assert kind.cap.split("=")[0] in env and kind.cap in kind.describe()


def test_a_cap_below_avx512_makes_the_plan_that_of_avx2(fake_cpu):
    fake_cpu("amx", env={"ATEN_CPU_CAPABILITY": "avx2"})
    plan = precision.resolve_execution("cpu")
    assert (plan.precision, plan.layout, plan.cpu) == ("fp32", "channels_last", "avx2")


def test_without_cpuinfo_torch_capability_names_the_kind_and_never_native_bf16():
    assert precision.kind_from_capability("AVX512", env={}).name == "avx512"
    assert precision.kind_from_capability("AVX2", env={}).name == "avx2"
    assert precision.kind_from_capability("DEFAULT", env={}).name == "other"
    assert not precision.kind_from_capability("AVX512", env={}).native_bf16


def test_the_real_cpu_kind_is_read_once_per_process():
    precision.cpu_kind.cache_clear()
    first = precision.cpu_kind()
    assert precision.cpu_kind() is first and first.name in precision.CPU_KINDS


def test_each_distinct_plan_is_logged_once(fake_cpu, monkeypatch, caplog):
    monkeypatch.setattr(precision, "_LOGGED", set())
    fake_cpu("avx2")
    with caplog.at_level(logging.INFO, logger="fcnseg.precision"):
        for _ in range(3):
            precision.resolve_execution("cpu")
        precision.resolve_execution("cpu", purpose="training")
        precision.resolve_execution("cpu")
    lines = [r.getMessage() for r in caplog.records if r.name == "fcnseg.precision"]
    assert len(lines) == 2
    assert lines[0] == "inference on " + precision.resolve_execution("cpu").describe()
    assert lines[0].startswith("inference on cpu (avx2: AMD EPYC 7B13), fp32, channels_last: ")
    assert lines[1].startswith("training on cpu (avx2: AMD EPYC 7B13), fp32, contiguous: ")


def test_unknown_layout_purpose_or_precision_are_config_errors():
    with pytest.raises(ConfigError, match="layout 'nhwc' is not one of auto, channels_last, contiguous"):
        precision.resolve_execution("cpu", layout="nhwc")
    with pytest.raises(ConfigError, match="purpose 'serving'"):
        precision.resolve_execution("cpu", purpose="serving")
    with pytest.raises(ConfigError, match="'int8' is not one of"):
        precision.resolve_execution("cpu", "int8")


@pytest.mark.parametrize(("legacy", "expected"), [(True, "channels_last"), (False, "contiguous"), ("auto", "auto")])
def test_configs_of_earlier_versions_read_channels_last_as_a_layout(legacy, expected):
    stored = {"preset": "small-cpu", "data": {"dataset": "synthetic"}, "train": {"channels_last": legacy}}
    assert RunConfig.from_dict(stored, "old checkpoint").train.layout == expected
    assert resolve_run_config(overrides=stored).train.layout == expected
    # a resumed old run with today's flag: the flag wins
    config = resolve_run_config(overrides={"train": {"layout": "contiguous"}}, base=stored)
    assert config.train.layout == "contiguous"


def test_a_legacy_channels_last_outside_true_false_auto_is_an_error_naming_the_new_field():
    with pytest.raises(ConfigError, match="channels_last 'yes' is not true, false or auto .*train.layout"):
        resolve_run_config(overrides={"data": {"dataset": "synthetic"}, "train": {"channels_last": "yes"}})


def test_train_layout_flag_and_the_earlier_switch_become_train_layout():
    from fcnseg.cli import build_parser

    argv = ["train", "--layout", "channels_last"]
    assert overrides_from_args(build_parser(argv).parse_args(argv))["train"]["layout"] == "channels_last"
    argv = ["train", "--no-channels-last", "--set", "data.dataset=synthetic"]
    args = build_parser(argv).parse_args(argv)
    assert resolve_run_config(overrides=overrides_from_args(args)).train.layout == "contiguous"


@pytest.mark.parametrize(("name", "expected_precision", "channels_last"), [
    ("avx512", "fp32", False), ("avx2", "fp32", True), ("amx", "bf16", True),
])
def test_the_predictor_runs_the_plan(fake_cpu, name, expected_precision, channels_last):
    fake_cpu(name)
    predictor = Predictor(build_model(ModelConfig(arch="fcn32s", backbone="small", num_classes=3)), IMAGENET_RGB,
                          device="cpu")
    plan = predictor.runtime.plan
    assert (plan.precision, plan.channels_last) == (expected_precision, channels_last)
    assert predictor.precision == expected_precision and predictor.channels_last is channels_last
    weight = predictor.model.backbone.conv1_1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
