"""The docs run: every Python block of README.md and docs/*.md is executed, every fcnseg command line parsed.

Python blocks run one by one, each in a fresh namespace and a working directory of its own holding what
the docs refer to: a small FCN-8s checkpoint at ``runs/demo/checkpoints/best.pt`` (random weights), its ONNX
export ``model.onnx``, torchvision's ``fcn_resnet50_coco-1167a1af.pth`` (its layout, random weights), the synthetic set ``data/synthetic-blobs``, ``photos/`` and ``photo.jpg``, and
small synthetic trees in the layouts of VOC, SIFT Flow (with a two-head checkpoint), NYUDv2 and PASCAL-Context. A block
marked ``<!-- docs-test: needs-user-file F -->`` (VOC trees, ImageNet or Caffe weights) or ``skip ...`` is
skipped with that reason; ``xfail ...`` marks a block whose doc is right and the code not yet.

Command lines (``fcnseg ...``, ``python -m fcnseg ...``, ``torchrun ... -m fcnseg ...``) are parsed with
fcnseg's own parser, abbreviations off, and not run.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import pytest

from fcnseg.cli import COMMANDS
from tests.docs_support import (
    DOC_FILES,
    REPOSITORY,
    CommandLine,
    DocBlock,
    cli_lines,
    command_lines,
    expand_alternatives,
    fcnseg_argv,
    python_blocks,
    read_blocks,
)

DEMO_CLASSES = 6


@pytest.fixture(scope="session")
def docs_workspace(tmp_path_factory) -> Path:
    """A folder holding the files the docs name, built once (a few seconds; the ONNX export most of them)."""
    import torch

    from fcnseg import (IMAGENET_RGB, ModelConfig, build_dataset, build_model, export_onnx, load_model, make_synthetic,
                        save_checkpoint)

    from fcnseg.data.synthetic_layouts import make_synthetic_layout

    root = tmp_path_factory.mktemp("docs-workspace")
    data = make_synthetic(root / "data" / "synthetic-blobs", num_train=4, num_val=4, style="blobs", size=(48, 64))
    # The trees docs/data.md opens, in their own layouts, two images a split.
    make_synthetic(root / "data" / "VOCdevkit" / "VOC2012", num_train=2, num_val=2, size=(48, 64))
    for style, folder in (("siftflow", "sift-flow"), ("nyud", "nyud"), ("pascal_context", "pascal-context")):
        make_synthetic_layout(root / "data" / folder, style, 2, 2, 0, size=(48, 64))
    for part in ("JPEGImages", "ImageSets"):  # PASCAL-Context's images are VOC2010's
        shutil.copytree(root / "data" / "pascal-context" / part, root / "data" / "VOCdevkit" / "VOC2010" / part)
    # The demo's net (small-cpu preset: small trunk, BatchNorm, "same" padding), random weights: the docs
    # only need a checkpoint that loads and runs, not one that segments well.
    config = ModelConfig(arch="fcn8s", backbone="small", num_classes=DEMO_CLASSES, padding="same", batch_norm=True)
    torch.manual_seed(0)
    model = build_model(config).eval()
    save_checkpoint(root / "runs" / "demo" / "checkpoints" / "best.pt", model, config, data["class_names"], IMAGENET_RGB)
    export_onnx(load_model(root / "runs" / "demo" / "checkpoints" / "best.pt"), root / "model.onnx")
    # A two-head SIFT Flow net (small trunk), as `fcnseg train --config configs/siftflow-fcn8s.yaml` writes one.
    siftflow = build_dataset("siftflow", root / "data" / "sift-flow", "test")
    heads = [[head.name, len(head.class_names)] for head in siftflow.heads]
    config = ModelConfig(arch="fcn8s", backbone="small", num_classes=heads[0][1], padding="same", heads=heads)
    save_checkpoint(root / "runs" / "siftflow-fcn8s" / "checkpoints" / "best.pt", build_model(config), config,
                    siftflow.heads[0].class_names, siftflow.normalization,
                    head_class_names={head.name: list(head.class_names) for head in siftflow.heads})
    photos = root / "photos"
    photos.mkdir()
    for image in sorted((root / "data" / "synthetic-blobs" / "JPEGImages").glob("val_*.jpg"))[:3]:
        shutil.copy(image, photos / image.name)
    shutil.copy(image, root / "photo.jpg")
    # torchvision's fcn_resnet50_coco file as a user has it in the torch hub cache: its key layout, random weights
    # (tests/resnet_reference.py). ~130 MB, so it lies beside the workspace and each block's copy links to it.
    from tests.resnet_reference import random_fcn_state_dict

    weights = tmp_path_factory.mktemp("docs-weights") / "fcn_resnet50_coco-1167a1af.pth"
    torch.save(random_fcn_state_dict("resnet50", aux=True), weights)
    (root / weights.name).symlink_to(weights)
    return root


PYTHON_BLOCKS = python_blocks()


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[block.id for block in PYTHON_BLOCKS])
def test_python_block_runs(block: DocBlock, request, tmp_path, monkeypatch):
    if block.marker == "needs-user-file":
        pytest.skip(f"needs a file only a user has: {block.marker_reason}")
    if block.marker == "skip":
        pytest.skip(block.marker_reason or "marked skip in the doc")
    if block.marker == "xfail":
        request.applymarker(pytest.mark.xfail(strict=False, reason=f"doc ahead of the code: {block.marker_reason}"))
    workspace = request.getfixturevalue("docs_workspace")
    work = tmp_path / "work"
    shutil.copytree(workspace, work, symlinks=True)  # the large weight files stay links
    monkeypatch.chdir(work)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__docs__"}
    exec(compile(block.code, block.id, "exec"), namespace)


def parse_fcnseg(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` as ``fcnseg`` does (fcnseg.cli.build_parser), with abbreviated flags refused."""
    from fcnseg.cli import build_parser

    parser = build_parser(argv)
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers.extend(action.choices.values())
    for each in parsers:
        each.allow_abbrev = False
    return parser.parse_args(argv)


CLI_LINES = cli_lines()


@pytest.mark.parametrize("command", CLI_LINES, ids=[command.id for command in CLI_LINES])
def test_command_line_parses(command: CommandLine, capsys):
    if command.block.marker == "skip":  # a command of a feature not built yet: the mark says which
        pytest.skip(command.block.marker_reason or "marked skip in the doc")
    for argv in command.variants:
        try:
            args = parse_fcnseg(argv)
        except SystemExit as stop:
            message = capsys.readouterr().err.strip().splitlines()[-1:] or [""]
            assert stop.code == 0 and "--help" in argv, f"`fcnseg {' '.join(argv)}` does not parse: {message[0]}"
            continue
        assert getattr(args, "func", None) is not None, f"`fcnseg {' '.join(argv)}` names no command"


def test_docs_have_python_blocks_and_command_lines():
    # Guards the extraction itself: a broken fence pattern would otherwise pass by finding nothing.
    assert len(PYTHON_BLOCKS) >= 10
    assert len(CLI_LINES) >= 50
    assert {block.path for block in PYTHON_BLOCKS} >= {REPOSITORY / "README.md", REPOSITORY / "docs" / "inference.md"}


def test_every_marked_block_says_why():
    for path in DOC_FILES:
        for block in read_blocks(path):
            if block.marker in ("needs-user-file", "xfail"):
                assert block.marker_reason, f"{block.id}: a docs-test marker without its reason"


def test_command_extraction_joins_continuations_and_drops_prompts_and_comments(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "<!-- docs-test: skip slow -->\n"
        "```console\n"
        "$ fcnseg train --config a.yaml \\\n"
        "    --out runs/a   # a comment\n"
        "pip install fcnseg\n"
        "torchrun --nproc_per_node=2 -m fcnseg eval x.pt --data d | tee log\n"
        "```\n",
        encoding="utf-8",
    )
    (block,) = read_blocks(doc)
    assert (block.marker, block.marker_reason, block.line) == ("skip", "slow", 2)
    commands = command_lines(block)
    assert [c.variants for c in commands] == [
        [["train", "--config", "a.yaml", "--out", "runs/a"]],
        [["eval", "x.pt", "--data", "d"]],
    ]
    assert [c.line for c in commands] == [3, 6]


def test_synopsis_alternatives_expand_into_one_argument_list_each():
    argv = fcnseg_argv("fcnseg check-data ROOT [--kind auto|voc] [--tta flip | --tta scales=1,2] --num-classes K ...")
    assert expand_alternatives(argv) == [
        ["check-data", "ROOT", "--num-classes", "4"],
        ["check-data", "ROOT", "--tta", "flip", "--num-classes", "4"],
        ["check-data", "ROOT", "--tta", "scales=1,2", "--num-classes", "4"],
        ["check-data", "ROOT", "--kind", "auto", "--num-classes", "4"],
        ["check-data", "ROOT", "--kind", "auto", "--tta", "flip", "--num-classes", "4"],
        ["check-data", "ROOT", "--kind", "auto", "--tta", "scales=1,2", "--num-classes", "4"],
    ]


def test_an_unknown_flag_fails_the_parse():
    with pytest.raises(SystemExit) as stop:
        parse_fcnseg(["predict", "model.pt", "photos/", "--no-such-flag"])
    assert stop.value.code == 2


def test_an_abbreviated_flag_fails_the_parse():
    # argparse would take `--over` for `--overlay`; the docs should spell flags out.
    with pytest.raises(SystemExit):
        parse_fcnseg(["predict", "model.pt", "photos/", "-o", "out/", "--over"])


# --- the help is documentation too -----------------------------------------------------------------


def help_of(command: str, capsys) -> str:
    """``fcnseg COMMAND --help``, whitespace folded (argparse wraps lines)."""
    with pytest.raises(SystemExit) as stop:
        parse_fcnseg([command, "--help"])
    assert stop.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def epilog_command_lines(command: str) -> list[list[str]]:
    """The ``fcnseg ...`` example lines of a command's ``--help`` (description and epilog), as argument lists."""
    from fcnseg.cli import build_parser

    parser = build_parser([command])
    subparser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    block = DocBlock(REPOSITORY / "fcnseg" / "cli.py", 0, "bash", f"{subparser.description or ''}\n{subparser.epilog or ''}")
    return [argv for line in command_lines(block) for argv in line.variants]


def test_train_help_states_each_presets_own_learning_rate_and_optimizer(capsys):
    from fcnseg.config import PRESETS

    text = help_of("train", capsys).split("presets:", 1)[1].split("examples:", 1)[0]
    for name, preset in PRESETS.items():
        line = text.split(f" {name} ", 1)[1].split(":", 1)[1].split(" paper-", 1)[0].split(" small-", 1)[0]
        optimizer = {"sgd": "SGD", "adamw": "AdamW"}[preset["train"]["optimizer"]]
        assert f"{optimizer} lr {preset['train']['lr']:g} " in line, f"{name}: {line}"
    assert "AdamW lr 0.004" in text  # the small-cpu preset; the help once said 1e-3


def test_serve_help_names_only_routes_the_server_has(tmp_path, capsys):
    from fcnseg.inference.predictor import Predictor
    from fcnseg.serve.app import create_app
    from tests.serve_support import save_small_checkpoint

    text = help_of("serve", capsys)
    from fcnseg.annotations.label_studio_backend import Backend, create_backend_app

    predictor = Predictor.from_checkpoint(save_small_checkpoint(tmp_path / "small.pt"))
    app = create_app(predictor)
    routes = {route.path for route in app.routes}
    routes |= {route.path for route in create_backend_app(Backend(predictor)).routes}  # serve --label-studio
    named = set(re.findall(r"(?<![\w/'])/[\w./]*\w", text))
    offered = {path for path in named if f"no {path}" not in text}
    assert {"/api/predict", "/openapi.json"} <= offered <= routes, f"help names {offered}, the server has {routes}"
    assert "/docs" not in routes  # what the help must not offer (it once did)


def test_every_example_in_the_commands_help_parses():
    examples = [argv for command in COMMANDS for argv in epilog_command_lines(command)]
    assert len(examples) >= 5  # train's epilog holds ten
    for argv in examples:
        parse_fcnseg(argv)


def multipart(*parts: tuple[str, str | None, bytes]) -> tuple[bytes, str]:
    """A multipart/form-data body of (field, filename or None, data) parts, and its Content-Type."""
    boundary = "docsboundary"
    body = b""
    for field, filename, data in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_serve_takes_the_multipart_file_under_any_field_name_as_docs_serve_md_says():
    from fcnseg.serve.upload import file_from_multipart

    body, content_type = multipart(("note", None, b"text"), ("upload", "a.png", b"PNG-A"))
    assert file_from_multipart(body, content_type) == (b"PNG-A", "a.png")
    body, content_type = multipart(("upload", "a.png", b"PNG-A"), ("file", "b.png", b"PNG-B"))
    assert file_from_multipart(body, content_type) == (b"PNG-B", "b.png")  # a part named image or file first


def test_every_module_path_the_docs_name_exists():
    named = {(path.name, found) for path in DOC_FILES
             for found in re.findall(r"`(fcnseg/[\w/]+\.py)`", path.read_text(encoding="utf-8"))}
    missing = sorted(f"{doc}: {found}" for doc, found in named if not (REPOSITORY / found).is_file())
    assert len(named) >= 10 and not missing, f"the docs name modules that do not exist: {missing}"
