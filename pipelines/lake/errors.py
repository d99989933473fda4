"""Errors a user can act on: the CLI prints them as one line, never as a traceback."""

from __future__ import annotations


class ChurnError(Exception):
    """A problem with the input, the data folder or the environment, explained in one line.

    ``exit_code`` follows the CLI convention: 2 for bad arguments or configuration,
    1 for a run that could not finish (a failed file, a held lock, a missing model).
    """

    exit_code = 1


class UsageError(ChurnError):
    """A command-line argument or a configured path that cannot be used."""

    exit_code = 2
