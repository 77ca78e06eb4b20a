"""The ``avengers`` command. Each subcommand lives in its own module with a ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

import pydantic
import yaml

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
    except BrokenPipeError:
        # The reader went away (`avengers routers list --json | head`): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (CommandError, ValueError, FileNotFoundError, yaml.YAMLError) as exc:
        # Domain errors (bad labels, bad router dir, bad parameters, a bad config file) are one clear line,
        # not a traceback.
        if args.verbose:
            raise
        print(f"avengers {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2


def one_line(exc: BaseException) -> str:
    """An error as one line: pydantic's report as `Model: field: message (got value)`, YAML's without its
    source excerpt, a missing file by its name."""
    if isinstance(exc, pydantic.ValidationError):
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "value"
            got = error.get("input")
            shown = "" if isinstance(got, dict | list) or got is None else f" (got {str(got)[:60]!r})"
            problems.append(f"{where}: {error['msg']}{shown}")
        return f"{exc.title}: " + "; ".join(problems)
    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        name = f"{mark.name}, " if mark and not mark.name.startswith("<") else ""
        where = f"{name}line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return f"not valid YAML: {where}{problem}"
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"{exc.filename}: no such file or directory"
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
