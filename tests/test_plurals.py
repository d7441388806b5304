"""Counts read as English: "1 image", "2 images", never "1 images" or "image(s)", wherever fcnseg prints a count."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

from fcnseg.files import plural
from fcnseg.inference.tta import describe_tta, parse_tta

PACKAGE = Path(__file__).resolve().parents[1] / "fcnseg"


def string_literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal (f-strings' text parts included) in a Python file."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if token.type == tokenize.STRING or token.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            text = token.string
            while re.search(r"\{[^{}]*\}", text):  # an f-string's expressions are code, not text
                text = re.sub(r"\{[^{}]*\}", "", text)
            found.append((token.start[0], text))
    return found


def test_no_message_hedges_a_plural_with_s_in_parentheses():
    hedged = re.compile(r"[a-z]\((s|es)\)")
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{line}: {text.strip()[:80]}"
                 for path in sorted(PACKAGE.rglob("*.py")) for line, text in string_literals(path)
                 if hedged.search(text) and not text.lstrip().startswith(('"""', "'''"))]
    assert offenders == []


@pytest.mark.parametrize("count,expected", [(0, "0 images"), (1, "1 image"), (2, "2 images")])
def test_plural_counts(count, expected):
    assert plural(count, "image") == expected


def test_one_variant_one_tile_one_image_read_in_the_singular():
    assert describe_tta(parse_tta("scales=1"))[:9] == "1 variant" and "1 variants" not in describe_tta(parse_tta("scales=1"))
    assert describe_tta(parse_tta("flip")).startswith("2 variants")


def test_the_training_start_line_says_one_val_image_and_one_process(tmp_path, caplog):
    import torch

    from fcnseg.training.reporter import Reporter
    from test_train import tiny

    reporter = Reporter(tmp_path / "run")
    config = tiny(tmp_path, iter_size=1)
    reporter.start(config, ["a", "b", "c", "d", "e", "f"])
    with caplog.at_level("INFO"):
        reporter.log_start(8, 1, 1, torch.device("cpu"), "fp32", 10)
    reporter.close()
    text = caplog.text
    assert "8 train / 1 val image, 1 process on cpu" in text and "1 pass x 1 process)" in text
    assert "(s)" not in text and "(es)" not in text and "1 val images" not in text
