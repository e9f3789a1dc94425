"""The one exception type users see: a clear, one-line message and a non-zero exit."""


class SegflowError(Exception):
    """A problem with the user's input or settings, reported as one line by the CLI."""


class InputsFailed(SegflowError):
    """Some inputs of a dataset could not be labeled; the others were.

    Carries the run summary so callers can still report every input's status.
    """

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


class OutputFailed(SegflowError):
    """The output folder stopped taking writes mid-run (disk full, read-only, gone, an
    object store that refuses or went away): a retry cannot fix it, so the run stops at
    the first range it cannot record. Exit status 1: the ranges written are complete."""

    exit_code = 1

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message
