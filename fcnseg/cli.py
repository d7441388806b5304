"""The `fcnseg` command: one subcommand per module in fcnseg.commands, each a thin wrapper over the library."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from fcnseg.errors import FcnsegError

# Subcommand name -> module in fcnseg.commands that defines `register(subparsers)`.
# Modules are imported only when listed here, so a new command is one module and one line.
COMMANDS = {
    "demo": "demo",
    "train": "train",
    "eval": "evaluate",
    "check-data": "check_data",
    "make-synthetic": "make_synthetic",
    "predict": "predict",
    "export": "export",
    "explain": "explain",
    "models": "models",
    "convert": "convert",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcnseg",
        description="Fully Convolutional Networks for semantic segmentation "
        "(Long, Shelhamer & Darrell, CVPR 2015).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(f"fcnseg.commands.{module_name}")
        except ModuleNotFoundError as e:
            if e.name == f"fcnseg.commands.{module_name}":
                continue  # command not part of this build
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FcnsegError as e:
        print(f"fcnseg {args.command}: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"fcnseg {args.command}: interrupted", file=sys.stderr)
        return 130
