"""`hypergrad` command: one subcommand per module, each registering its own parser.

A subcommand module `_NAME` defines `register(subparsers)`, which adds the parser of
the command NAME and sets `func` on it; `func(args) -> int` is the exit code. Only the
module of the command named on the command line is imported (all of them for `--help`
or an unknown command): a worker or `hypergrad report` does not pay for the demo's
imports (SciPy through the search module), nor the demo for the report's.

Output cut short by its reader (`hypergrad report ... | head`) ends the command quietly
with exit code 141, as a program stopped by SIGPIPE would, without a traceback.
"""

import argparse
import importlib
import os
import sys

# Subcommand modules, in the order `--help` lists them. A module that cannot be imported
# (an optional part not built yet) is skipped rather than breaking the other commands.
_SUBCOMMANDS = ("_demo", "_methods", "_run", "_report", "_reproduce", "_worker")
# 128 + SIGPIPE: what a shell reports for a program the signal stopped.
EXIT_BROKEN_PIPE = 141


def _command(argv: list[str]) -> str | None:
    """The subcommand module `argv` names, if it names one (options before it: only -h)."""
    for arg in argv:
        if not arg.startswith("-"):
            return f"_{arg}" if f"_{arg}" in _SUBCOMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand, or only `command`'s (a module name, `_demo`)."""
    parser = argparse.ArgumentParser(
        prog="hypergrad", description="Gradient-based hyperparameter optimization on JAX."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMANDS if command is None else (command,):
        try:
            module = importlib.import_module(f"hypergrad.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"hypergrad.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command(argv))
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe shows at the flush
    except BrokenPipeError:
        # Python ignores SIGPIPE, so a reader that stopped reading surfaces here. Point
        # stdout at /dev/null so that the interpreter's last flush is quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
