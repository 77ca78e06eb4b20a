"""The ``avengers`` command. Each subcommand lives in its own module with a ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from avengers import __version__

# Modules under avengers.cli that define subcommands, in help order.
COMMAND_MODULES = ["offline", "publish", "serve", "calibrate", "evaluate", "up", "ask", "bench", "pool"]


class CommandError(Exception):
    """A user error: printed as one line on stderr, exit status 2."""


DESCRIPTION = (
    "Many small open LLMs behind one API: fit and evaluate routers offline, run the services "
    "(gRPC, and an OpenAI-compatible HTTP API), ask the ensemble. `avengers COMMAND --help` for each command."
)


def polish_help(parser: argparse.ArgumentParser) -> None:
    """Help as a user reads it: single backticks (docstrings use reST's double ones) and every option's
    default stated (an option whose help names none gets "(default: X)" when it has one)."""
    if parser.description:
        parser.description = parser.description.replace("``", "`")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                polish_help(child)
            continue
        if not action.option_strings or action.help == argparse.SUPPRESS or action.required:
            continue
        if action.help is not None:
            action.help = action.help.replace("``", "`")
        if isinstance(action, argparse._StoreConstAction) or action.default in (None, argparse.SUPPRESS):
            continue  # flags, and options that are simply absent unless given
        if "default" not in (action.help or ""):
            action.help = f"{action.help} (default: %(default)s)" if action.help else "(default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avengers", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"avengers {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="threads of every compute pool of the process: torch, ONNX Runtime, OpenMP, BLAS (default: "
        "$AVENGERS_THREADS, else $OMP_NUM_THREADS, else the CPUs the process may use)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"avengers.cli.{name}").register(sub)
    polish_help(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    from avengers.threads import apply_thread_limits

    apply_thread_limits(args.threads)  # before any command loads torch, ONNX Runtime or scikit-learn
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (CommandError, ValueError, FileNotFoundError) as exc:
        # Domain errors (bad labels, bad router dir, bad parameters) are one clear line, not a traceback.
        if args.verbose:
            raise
        print(f"avengers {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
