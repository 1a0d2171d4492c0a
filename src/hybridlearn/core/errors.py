"""Errors that end a run with one line (`error: ...`) instead of a traceback, and the one wrapper
that turns them into that line for every command's main."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P, R = ParamSpec("P"), TypeVar("R")
EXIT_ERROR = 2  # a run refused or failed for a reason its one line names (argparse's usage code too)


class HybridlearnError(Exception):
    """Base class: the message names the key or file and says what to do. Not a ValueError, so a
    library's `except ValueError` never swallows one of ours."""


class ConfigError(HybridlearnError):
    """A config value (or command-line argument) is missing, out of range or inconsistent."""


class DataError(HybridlearnError):
    """A data or checkpoint file is missing, corrupt or malformed."""


class TrainingError(HybridlearnError):
    """Training went wrong in a way the user can act on (a loss that is NaN, infinite or diverging)."""


class RunsFailed(HybridlearnError):
    """Runs that a command started (jobs of a sweep, stages of `make reproduce`) failed or never ran;
    each keeps its own record."""


def root_error(e: BaseException) -> BaseException:
    """Ours, where Hydra wrapped it (InstantiationException around a constructor's error), else `e`."""
    cause = e
    while cause is not None:
        if isinstance(cause, HybridlearnError):
            return cause
        cause = cause.__cause__
    return e


def report_error(e: BaseException) -> int:
    """Print `error: <message>` (one line) on stderr; return the exit code of a refused or failed run."""
    print(f"error: {e}", file=sys.stderr)
    return EXIT_ERROR


def one_line_errors(main: Callable[P, R]) -> Callable[P, R | int]:
    """Decorator for a command's main: our errors (HybridlearnError, whose message names the key or
    file and what to do) end it with `error: <message>` on stderr and exit code 2, returned like the
    main's own codes (`sys.exit(main())`), instead of a traceback. Other exceptions are bugs: they
    keep their traceback."""

    @functools.wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | int:
        try:
            return main(*args, **kwargs)
        except HybridlearnError as e:
            return report_error(e)

    return wrapper
