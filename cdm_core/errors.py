"""Errors the engine raises for bad input.

Every error meant for a user is a `CdmInputError`: its message is one line that names the
offending file or option and the problem, so the CLI can print it and exit with code 2 and the
dashboard can show it inline without a traceback.
"""


class CdmInputError(ValueError):
    """Bad input from a user: a malformed file, a wrong shape, an absurd parameter."""

    def __init__(self, message: str):
        # Keep the message on one line whatever the caller passed.
        super().__init__(" ".join(str(message).split()))


class DatasetUnavailable(CdmInputError):
    """A registered data set whose files are missing on this machine (says how to install)."""


class BackendError(CdmInputError):
    """A run that could not finish on its backend (a Ray actor died, a cluster cannot be reached):
    one line, and no partial result is written."""
