"""`hypergrad` command: one subcommand per module, each registering its own parser.

A subcommand module defines `register(subparsers)`, which adds its parser and sets
`func` on it; `func(args) -> int` is the exit code.
"""

import argparse
import importlib
import sys

# Subcommand modules, in the order `--help` lists them. A module that cannot be imported
# (an optional part not built yet) is skipped rather than breaking the other commands.
_SUBCOMMANDS = ("_demo", "_methods", "_run", "_report", "_reproduce")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hypergrad", description="Gradient-based hyperparameter optimization on JAX."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        try:
            module = importlib.import_module(f"hypergrad.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"hypergrad.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
