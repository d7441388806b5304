"""Replacing a data set's input normalisation after construction (`use_inputs`), and the one torch-free option list."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fcnseg.data import IMAGENET_RGB, NYUD_HHA, SIFTFLOW_BGR, NYUDDataset, SyntheticDataset, build_dataset, make_synthetic
from fcnseg.data.kinds import DATASET_KINDS, NYUD_MODALITIES, SYNTHETIC_STYLES
from fcnseg.data.normalization import InputSpec, LogDepthNormalization, Normalization
from fcnseg.data.synthetic_layouts import make_synthetic_layout
from fcnseg.errors import DataError

from test_data_folder import write_folder

ROOT = Path(__file__).resolve().parent.parent
ODD_HHA = Normalization("odd_hha", (1.0, 2.0, 3.0), (2.0, 2.0, 2.0), bgr=True, value_scale=1.0)
ODD_DEPTH = LogDepthNormalization("odd_depth", mean=3.0, min_depth=2.0)


def assert_same_items(switched, fresh):
    assert len(switched) == len(fresh)
    for i in range(len(fresh)):
        (a_image, a_mask), (b_image, b_mask) = switched[i], fresh[i]
        torch.testing.assert_close(a_image, b_image, rtol=0, atol=0)
        assert torch.equal(a_mask, b_mask)


def rgb_sets(tmp_path):
    """(open(normalization=...)) for a VOC tree, an image/mask folder and the in-memory synthetic set."""
    make_synthetic(tmp_path / "voc", num_train=2, num_val=1, size=(24, 32))
    write_folder(tmp_path / "folder", ["a", "b"])
    return {
        "voc": lambda **n: build_dataset("voc", tmp_path / "voc", "train", **n),
        "folder": lambda **n: build_dataset("folder", tmp_path / "folder", "all", **n),
        "synthetic": lambda **n: build_dataset("synthetic", None, "val", num_images=2, size=(24, 32), **n),
    }


@pytest.mark.parametrize("kind", ["voc", "folder", "synthetic"])
def test_items_after_use_inputs_equal_items_of_a_set_opened_with_that_normalization(tmp_path, kind):
    open_set = rgb_sets(tmp_path)[kind]
    switched = open_set()
    before = switched[0][0].clone()
    assert switched.use_inputs(normalization=IMAGENET_RGB) is switched
    assert switched.normalization == IMAGENET_RGB
    assert not torch.allclose(switched[0][0], before)  # the switch changed what is served
    assert_same_items(switched, open_set(normalization=IMAGENET_RGB))
    # a checkpoint's input spec of the colour image alone does the same
    switched.use_inputs(inputs=InputSpec("color", {"color": SIFTFLOW_BGR}))
    assert_same_items(switched, open_set(normalization=SIFTFLOW_BGR))


def test_an_rgb_set_refuses_inputs_it_does_not_read(tmp_path):
    dataset = SyntheticDataset("val", 1)
    with pytest.raises(DataError, match="'color\\+hha'.*one RGB image"):
        dataset.use_inputs(inputs=InputSpec("color+hha", {"color": IMAGENET_RGB, "hha": NYUD_HHA}))


@pytest.mark.parametrize("modalities", ["color+hha", "color+depth", "hha"])
def test_nyud_items_after_use_inputs_equal_items_of_a_set_opened_with_those_inputs(tmp_path, modalities):
    make_synthetic_layout(tmp_path, "nyud", num_train=2, num_val=1, size=(20, 24))
    options = {"normalization": IMAGENET_RGB, "hha_normalization": ODD_HHA, "depth_normalization": ODD_DEPTH}
    fresh = NYUDDataset(tmp_path, "train", modalities=modalities, **options)
    switched = NYUDDataset(tmp_path, "train", modalities=modalities)
    spec = InputSpec(modalities, {"color": IMAGENET_RGB, "hha": ODD_HHA, "depth": ODD_DEPTH})
    assert switched.use_inputs(inputs=spec) is switched
    assert switched.input_spec == fresh.input_spec
    assert switched.normalization == fresh.normalization
    assert_same_items(switched, fresh)


def test_nyud_use_inputs_normalization_sets_the_colour_one_only(tmp_path):
    make_synthetic_layout(tmp_path, "nyud", num_train=2, num_val=1, size=(20, 24))
    switched = NYUDDataset(tmp_path, "train", modalities="color+hha").use_inputs(normalization=IMAGENET_RGB)
    assert_same_items(switched, NYUDDataset(tmp_path, "train", modalities="color+hha", normalization=IMAGENET_RGB))


def test_nyud_refuses_the_inputs_of_other_modalities_and_names_both(tmp_path):
    make_synthetic_layout(tmp_path, "nyud", num_train=1, num_val=1, size=(20, 24))
    dataset = NYUDDataset(tmp_path, "train", modalities="color")
    with pytest.raises(DataError, match="'color'.*'color\\+hha'; open it with modalities='color\\+hha'"):
        dataset.use_inputs(inputs=InputSpec("color+hha", {"color": IMAGENET_RGB, "hha": NYUD_HHA}))


def test_each_option_list_is_the_one_the_data_sets_check():
    from fcnseg.data.build import DATASET_CLASSES
    from fcnseg.data.nyud import MODALITY_OPTIONS
    from fcnseg.data.synthetic import STYLE_CLASSES

    assert tuple(DATASET_CLASSES) == DATASET_KINDS
    assert tuple(MODALITY_OPTIONS) == NYUD_MODALITIES
    assert tuple(STYLE_CLASSES) == SYNTHETIC_STYLES


def test_train_help_offers_the_styles_without_importing_torch():
    code = (
        "from fcnseg.cli import main\n"
        "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
        "import sys\nprint('TORCH', 'torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "--style {shapes,blobs,thin,rare}" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "TORCH False"
