"""The `cxrgen` command line. Library code logs; only the command modules print.

Each entry of COMMANDS is a module (one per top-level command, in cxrgen/commands/) with `register(subparsers)`; it adds its subcommand(s)
and sets `func` to a callable taking the parsed args and returning an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading

from cxrgen.io import disk_full_error, is_disk_full
from cxrgen.errors import UserError

COMMANDS = [
    "cxrgen.commands.data",  # data stats / data check / data phantom
    "cxrgen.commands.demo",  # demo: the main job end to end
    "cxrgen.commands.label",  # label: CheXpert-style labels for a CSV/JSONL of reports
    "cxrgen.commands.serve",  # serve: web page + HTTP API
    "cxrgen.commands.eval",  # eval: NLG + clinical metrics with bootstrap CIs, beside baselines
    "cxrgen.commands.baseline",  # baseline: trivial baseline predictions for a split
    "cxrgen.commands.simplify",  # simplify: plain-language reports behind a consistency guard
    "cxrgen.commands.train",  # train: fit a report generator from a YAML config
    "cxrgen.commands.generate",  # generate: reports for one study or a dataset split
    "cxrgen.commands.model",  # model: card and OOD training statistics of a checkpoint
    "cxrgen.commands.clip",  # clip: train/eval/probe the chest X-ray CLIP, retrieval baseline
    "cxrgen.commands.experiment",  # experiment: multi-seed CLIP ablation from a YAML file
]


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, like every other cxrgen error (the usage is in --help)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cxrgen",
        description="Chest X-ray report generation. Research prototype: output is a draft, not a diagnosis.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # a `kill` then unwinds like Ctrl-C: temporaries are removed, the exit is clean


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
        signal.signal(signal.SIGTERM, _interrupt)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: file not found: {e.filename or e}", file=sys.stderr)
        return 2
    except PermissionError as e:
        print(f"error: permission denied: {e.filename or e}", file=sys.stderr)
        return 2
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as e:  # e.g. --output names a file
        print(f"error: {e.filename}: {e.strerror}; give a path of the right kind", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an unexpected failure: one line, the traceback only on request
        if is_disk_full(e) and not args.debug:  # a write outside atomic_open (logs, caches)
            print(f"error: {disk_full_error(getattr(e, 'filename', None) or 'the output', e)}", file=sys.stderr)
            return 2
        if args.debug:
            raise
        print(f"error: {e.__class__.__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
