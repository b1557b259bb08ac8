"""Exceptions that carry a message meant for the user.

The command-line interface prints these as one line and exits non-zero, without a
traceback; everything else is a bug and keeps its traceback.
"""


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


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    """A warning as the command line shows it (``warnings.formatwarning``): one line, no source."""
    return f"beyondbp: warning: {message}\n"
