"""What the command line imports: `fcnseg --help` no torch, `fcnseg predict` neither matplotlib nor fcnseg.ideas."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fcnseg.weights.checkpoint import save_checkpoint
from fcnseg.config import ModelConfig
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.models import build_model

ROOT = Path(__file__).resolve().parent.parent


def run_then_list_modules(code: str, *names: str) -> dict[str, bool]:
    """Run ``code`` in a fresh interpreter, then report which of ``names`` are in ``sys.modules``."""
    script = f"{code}\nimport sys\nprint('LOADED', *[int(n in sys.modules) for n in {list(names)!r}])"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    flags = next(line for line in out.stdout.splitlines() if line.startswith("LOADED")).split()[1:]
    return dict(zip(names, (flag == "1" for flag in flags)))


def test_help_does_not_import_torch():
    code = "from fcnseg.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    assert run_then_list_modules(code, "torch") == {"torch": False}


def test_predict_imports_neither_matplotlib_nor_the_ideas(tmp_path):
    model = build_model(ModelConfig(arch="fcn8s", backbone="small", num_classes=3))
    save_checkpoint(tmp_path / "m.pt", model, model.config, ["a", "b", "c"], PAPER_BGR)
    Image.fromarray(np.zeros((40, 56, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    argv = ["predict", str(tmp_path / "m.pt"), str(tmp_path / "x.png"), "-o", str(tmp_path / "out"),
            "--stats", "--overlay", "--probabilities", "--workers", "0", "--no-progress"]
    code = f"from fcnseg.cli import main\nassert main({argv!r}) == 0"
    loaded = run_then_list_modules(code, "matplotlib", "fcnseg.ideas", "fcnseg.training", "torch")
    assert loaded == {"matplotlib": False, "fcnseg.ideas": False, "fcnseg.training": False, "torch": True}
    assert (tmp_path / "out" / "x_labels.png").is_file()
