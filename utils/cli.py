"""What every command line of the project shares: help that shows defaults, and errors as one line.

A user error (a bad flag, a missing or unreadable file, settings that cannot run) ends the program with one
line ``PROG: error: MESSAGE`` on stderr and exit code `USAGE_ERROR` (2, argparse's own code for a bad flag), so
scripts can tell it from a crash. ``--debug`` (any command) or ``DGL_DEBUG=1`` shows the traceback instead.

Exit codes of every entry point: 0 done; 1 done, but some items failed (named in the output: videos that
could not be compressed or cached); 2 user error; 130 interrupted (Ctrl-C); anything else is a crash.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from dataloaders.frame_cache import FrameCacheError
from dataloaders.video_io import VideoReadError
from utils.distributed import StuckRankError
from utils.step_monitor import NonFiniteLossError

USAGE_ERROR = 2
INTERRUPTED = 130
DEBUG_FLAG = "--debug"
DEBUG_ENV = "DGL_DEBUG"
# The errors whose message is written for the user. ValueError and OSError cover the project's own checks
# (CLIPLoadError, CheckpointError, AnnotationError, missing files, full disks); the rest are its run-time verdicts.
USER_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, VideoReadError, FrameCacheError, NonFiniteLossError, StuckRankError,
)


def program_name() -> str:
    """How the user started the program: ``main.py``, or ``python -m apps.bench`` for a package run with -m."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return f"python -m {spec.name.removesuffix('.__main__')}"
    return Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "dgl"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written, and each option's default after its help (unless the help already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or any(default is none for none in (None, False, argparse.SUPPRESS))
                or "default" in text or isinstance(action, argparse._HelpAction)):  # `is`: a default of 0 is shown
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with `HelpFormatter`, no abbreviated flags, ``--debug``, and a one-line error for a bad flag."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        if kwargs.get("prog") is None and not args:
            kwargs["prog"] = program_name()
        super().__init__(*args, **kwargs)
        if kwargs.get("add_help", True):  # sub-commands inherit this class; each accepts --debug where typed
            self.add_argument(DEBUG_FLAG, action="store_true", help=f"show the traceback of an error (also {DEBUG_ENV}=1)")

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {one_line(message)} (see --help)", file=sys.stderr)
        sys.exit(USAGE_ERROR)


def require_path(flag: str, path: str | os.PathLike, fix: str) -> Path:
    """``path`` if it exists; else FileNotFoundError naming the flag, the path and ``fix`` (what to pass instead)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{flag} {path}: no such file or folder; {fix}")
    return path


def one_line(message: object) -> str:
    """A message as one line: its lines joined, surrounding blanks dropped."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def debugging(argv: Sequence[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run(main: Callable[[list[str]], object], argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Call ``main(argv)`` and turn its user errors into one line and `USAGE_ERROR`; returns the exit code
    (``main``'s own int, else 0). ``SystemExit("message")`` counts as a user error too; an int SystemExit is
    returned as it is."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debugging(argv)
    prog = prog or program_name()
    try:
        result = main(argv)
    except SystemExit as stop:
        if not isinstance(stop.code, str):
            return stop.code or 0  # argparse's own exits: --help (0), a bad flag (2)
        return _report(prog, stop.code, debug)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except USER_ERRORS as err:
        if debug:
            raise
        return _report(prog, err, debug)
    return result if isinstance(result, int) else 0


def _report(prog: str, message: object, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
    return USAGE_ERROR
