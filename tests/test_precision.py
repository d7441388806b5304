"""One precision vocabulary for train, eval, predict and the demo: what each word means on each machine."""

import pytest
import torch

import fcnseg.precision as precision
from fcnseg.config import RunConfig, resolve_run_config
from fcnseg.errors import ConfigError
from fcnseg.evaluation import evaluate
from fcnseg.inference.predictor import Predictor
from fcnseg.data.normalization import IMAGENET_RGB
from fcnseg.data.synthetic import SyntheticDataset
from fcnseg.models import ModelConfig, build_model

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("native", [True, False])
def test_auto_takes_bf16_only_on_cpus_that_run_it_natively(fake_cpu, native):
    fake_cpu("avx512_bf16" if native else "avx512")
    assert precision.resolve_precision("auto", CPU) == ("bf16" if native else "fp32")
    assert precision.autocast_dtype("auto", CPU) == (torch.bfloat16 if native else None)
    assert precision.resolve_precision("auto", CUDA) == "fp16"
    assert precision.resolve_precision("fp32", CUDA) == "fp32"
    assert precision.autocast_dtype("bf16", CPU) == torch.bfloat16  # forced, whatever the CPU


def test_forcing_emulated_bf16_warns(fake_cpu, caplog):
    fake_cpu("avx2")
    with caplog.at_level("WARNING"):
        assert precision.resolve_precision("bf16", CPU) == "bf16"
    assert "emulated" in caplog.text


def test_unknown_precision_is_an_error_naming_the_word_and_the_choices():
    with pytest.raises(ConfigError, match="'int8' is not one of auto, fp32, bf16, fp16"):
        precision.resolve_precision("int8", CPU)


@pytest.mark.parametrize(("amp", "expected"), [("off", "fp32"), ("fast", "auto"), ("bf16", "bf16"), ("auto", "auto")])
def test_configs_of_earlier_versions_read_amp_as_precision(amp, expected):
    stored = {"preset": "small-cpu", "data": {"dataset": "synthetic"}, "train": {"amp": amp}}
    assert RunConfig.from_dict(stored, "old checkpoint").train.precision == expected
    assert resolve_run_config(overrides=stored).train.precision == expected


def test_training_config_rejects_a_word_outside_the_vocabulary():
    with pytest.raises(ConfigError, match="precision 'half'"):
        resolve_run_config(overrides={"data": {"dataset": "synthetic"}, "train": {"precision": "half"}})


@pytest.mark.parametrize("native", [True, False])
def test_auto_means_the_same_format_in_evaluation_and_prediction(fake_cpu, native):
    fake_cpu("amx" if native else "avx512")
    model = build_model(ModelConfig(arch="fcn32s", backbone="small", num_classes=6, pad=100))
    dataset = SyntheticDataset("val", 1, size=(40, 40), normalization=IMAGENET_RGB)
    evaluated = evaluate(model, dataset, precision="auto", progress=False)["precision"]
    predictor = Predictor(model, IMAGENET_RGB, precision="auto", device="cpu")
    assert evaluated == predictor.precision == ("bf16" if native else "fp32")
