"""`fcnseg explain` writes a report whose numbers come from this run; receptive fields and crop offsets are derived."""

import json

from fcnseg.ideas.receptive import fcn_geometry
from fcnseg.ideas.upsampling import train_staged, upsampling_view


def test_crop_offsets_shown_are_the_reference_ones_for_vgg16():
    geometry = fcn_geometry("vgg16")
    offsets = {(c.arch, c.crop): c.offset for c in geometry["crops"]}
    assert offsets == {
        ("fcn32s", "score"): 19,
        ("fcn16s", "score_pool4c"): 5, ("fcn16s", "score"): 27,
        ("fcn8s", "score_pool4c"): 5, ("fcn8s", "score_pool3c"): 9, ("fcn8s", "score"): 31,
    }
    last = geometry["layers"][-1]
    assert (last.name, last.receptive_field, last.output_stride) == ("score_fr", 404, 32)


def test_upsampling_view_shapes_after_a_tiny_training():
    trained = train_staged(budget_seconds=0.0, max_steps=1, progress=False)  # untrained: one step at most
    import numpy as np

    image = np.zeros((70, 90, 3), dtype=np.uint8)
    view = upsampling_view(trained, image)
    assert set(view.outputs) == {"fcn32s", "fcn16s", "fcn8s"}
    assert all(tuple(o.shape[-2:]) == (70, 90) for o in view.outputs.values())
    assert tuple(view.bilinear.shape[-2:]) == (70, 90)


def test_cli_writes_report_figures_and_results(tmp_path):
    from fcnseg.cli import main

    out = tmp_path / "explain"
    code = main([
        "explain", "--out", str(out), "--arch", "small-padded", "--size", "160", "--repeats", "1", "--stitch-size", "226",
        "--scaling-points", "2",
        "--stitch-factor", "2", "--train-seconds", "0", "--no-progress",
    ])
    assert code == 0
    report = (out / "report.md").read_text()
    for heading in ("Patch-wise", "Fully connected", "Receptive fields", "Upsampling", "Shift-and-stitch"):
        assert heading in report
    for png in ("cost_scaling.png", "patchwise_difference.png", "upsampling.png", "shift_stitch.png"):
        assert (out / png).stat().st_size > 1000
        assert f"]({png})" in report
    results = json.loads((out / "results.json").read_text())
    assert 0 < results["patchwise"][0]["relative_diff"] < 0.2  # padded: close, not equal
    assert results["shift_stitch"]["comparisons"][0]["max_abs_diff"] < 1e-5
    assert results["fc_to_conv"]["max_abs_diff"] < 1e-5
