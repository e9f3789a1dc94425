"""The one exception type users see: a clear, one-line message and a non-zero exit."""


class SegflowError(Exception):
    """A problem with the user's input or settings, reported as one line by the CLI."""
