"""Exceptions that carry a message meant for the user.

The command-line interface prints these as one line and exits non-zero, without a
traceback; everything else is a bug and keeps its traceback.
"""

import warnings


class BeyondBPError(Exception):
    """Base class of errors caused by the user's input or environment (exit code 2)."""

    exit_code = 2


class UnknownNameError(BeyondBPError, KeyError):
    """A name (method, signal, data set, model, ...) that no registry knows."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class UnsupportedModelError(BeyondBPError):
    """A method was asked to train a model (or a layer) it cannot handle."""


class DataNotFoundError(BeyondBPError):
    """The files of a data set are not where we looked."""


class DataFormatError(BeyondBPError):
    """A data file that cannot be read as what it should be (truncated, wrong columns, NaN, ...)."""


class DivergenceError(BeyondBPError):
    """The training loss became NaN or infinite."""

    exit_code = 1


def show_warnings_in_one_line() -> None:
    """Format this process's warnings as the command line shows them (``warnings.formatwarning``): one line
    each, no source, and a line already shown not again (a search's trials, a suite's runs would repeat it).
    ``warnings.showwarning`` stays as it is, so ``catch_warnings(record=True)`` still records every one."""
    shown: set[str] = set()

    def one_line(message, category, filename, lineno, line=None) -> str:
        text = f"beyondbp: warning: {message}\n"
        if text in shown:
            return ""
        shown.add(text)
        return text

    warnings.formatwarning = one_line
