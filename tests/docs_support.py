"""Code blocks of README.md and docs/*.md, and the command lines in them, read for tests/test_docs.py.

A block may carry a marker in an HTML comment on the line just above its fence (blank lines between
are allowed): ``<!-- docs-test: needs-user-file vgg16.pth -->``, ``<!-- docs-test: skip slow -->`` or
``<!-- docs-test: xfail handle -->``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
DOC_FILES = [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").glob("*.md"))]

PYTHON_LANGUAGES = {"python", "py"}
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
MARKER = re.compile(r"^<!--\s*docs-test:\s*(?P<kind>[\w-]+)\s*(?P<reason>.*?)\s*-->$")
FENCE = re.compile(r"^(?P<fence>```+)\s*(?P<language>[\w+-]*)\s*$")
# Words the docs write for a value of the reader's choosing, replaced by one that parses (int-typed flags).
PLACEHOLDERS = {"K": "4", "N": "8"}
# Tokens that end a command: a pipe, a redirect, another command.
COMMAND_ENDS = {"|", ">", ">>", "&&", "||", ";", "&"}


@dataclass
class DocBlock:
    """One fenced code block: where it is, its language tag ('' for none), its text and its marker."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    marker: str = ""  # "needs-user-file", "skip", "xfail" or ""
    marker_reason: str = ""

    @property
    def id(self) -> str:
        """``README.md:L123`` or ``docs/serve.md:L9``: the file relative to the repository, then the fence line."""
        return f"{self.path.relative_to(REPOSITORY).as_posix()}:L{self.line}"


def read_blocks(path: Path) -> list[DocBlock]:
    """Every fenced block of a Markdown file, with the ``docs-test`` marker found just above its fence."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[DocBlock] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != opening["fence"]:
            end += 1
        marker, reason = _marker_above(lines, index)
        blocks.append(DocBlock(path, index + 1, opening["language"].lower(), "\n".join(lines[index + 1:end]) + "\n",
                               marker, reason))
        index = end + 1
    return blocks


def _marker_above(lines: list[str], fence_index: int) -> tuple[str, str]:
    """The (kind, reason) of a ``<!-- docs-test: ... -->`` comment on the last non-blank line above a fence."""
    above = fence_index - 1
    while above >= 0 and not lines[above].strip():
        above -= 1
    found = MARKER.match(lines[above].strip()) if above >= 0 else None
    if not found:
        return "", ""
    kind, reason = found["kind"], found["reason"]
    if kind not in ("needs-user-file", "skip", "xfail"):
        raise ValueError(f"line {above + 1}: unknown docs-test marker {kind!r}")
    return kind, reason


def all_blocks() -> list[DocBlock]:
    return [block for path in DOC_FILES for block in read_blocks(path)]


def python_blocks() -> list[DocBlock]:
    return [block for block in all_blocks() if block.language in PYTHON_LANGUAGES]


@dataclass
class CommandLine:
    """One fcnseg command line of a block: where it starts, its text, and the argument lists it stands for."""

    block: DocBlock
    line: int  # 1-based line in the Markdown file
    text: str
    variants: list[list[str]] = field(default_factory=list)  # fcnseg's argv, one per written alternative

    @property
    def id(self) -> str:
        return f"{self.block.path.relative_to(REPOSITORY).as_posix()}:L{self.line}"


def command_lines(block: DocBlock) -> list[CommandLine]:
    """The lines of a shell (or untagged) block that run fcnseg: ``fcnseg ...``, ``python -m fcnseg ...``,
    ``torchrun ... -m fcnseg ...``; ``\\`` continuations joined, ``$ `` prompts and comments dropped."""
    commands = []
    lines = block.code.splitlines()
    index = 0
    while index < len(lines):
        start = index
        text = lines[index]
        while text.rstrip().endswith("\\") and index + 1 < len(lines):
            index += 1
            text = text.rstrip()[:-1] + " " + lines[index].strip()
        index += 1
        text = text.strip().removeprefix("$ ")
        argv = fcnseg_argv(text)
        if argv is not None:
            commands.append(CommandLine(block, block.line + 1 + start, text, expand_alternatives(argv)))
    return commands


def fcnseg_argv(text: str) -> list[str] | None:
    """The arguments given to fcnseg by one shell line (an optional ``[...]`` group kept as one word), or None."""
    try:
        words = shlex.split(_protect_groups(text), comments=True)
    except ValueError:
        return None
    for position, word in enumerate(words):
        if word in COMMAND_ENDS:
            words = words[:position]
            break
    if words[:1] == ["fcnseg"]:
        return words[1:]
    for position in range(len(words) - 1):
        if words[position:position + 2] == ["-m", "fcnseg"] and words[0] in ("python", "python3", "torchrun"):
            return words[position + 2:]
    return None


# Optional groups (`[--split train val]`, `[--tta flip | --tta scales=...]`) travel through shlex as one word.
_GROUP = re.compile(r"\[([^\[\]]*)\]")


def _protect_groups(text: str) -> str:
    return _GROUP.sub(lambda m: "'[" + m.group(1).replace("'", "") + "]'", text)


def expand_alternatives(argv: list[str]) -> list[list[str]]:
    """One argument list per way of reading a documented synopsis.

    ``...`` is dropped; an optional group ``[--tta flip | --tta scales=...]`` yields one list without it and
    one with each alternative; a word ``auto|voc|sbd`` yields one list per choice; placeholders that must
    parse as numbers (``K``) become numbers.
    """
    variants: list[list[str]] = [[]]
    for word in argv:
        if word == "...":
            continue
        if word.startswith("[") and word.endswith("]"):
            choices = [[]] + [_choice_words(alternative) for alternative in word[1:-1].split(" | ")]
        elif "|" in word and not word.startswith("-"):
            choices = [[choice] for choice in word.split("|")]
        else:
            choices = [[PLACEHOLDERS.get(word, word)]]
        variants = [variant + choice for variant in variants for choice in choices]
    return variants


def _choice_words(alternative: str) -> list[str]:
    words = []
    for word in shlex.split(alternative):
        words.extend(word.split("|")[:1] if "|" in word and not word.startswith("-") else [word])
    return [PLACEHOLDERS.get(word, word) for word in words]


def cli_lines() -> list[CommandLine]:
    """Every fcnseg command line in a shell or untagged block of the docs."""
    return [command for block in all_blocks() if block.language in SHELL_LANGUAGES | {""}
            for command in command_lines(block)]
