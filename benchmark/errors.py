"""The one exception type the CLI turns into a clean message and a non-zero exit."""


class BenchError(Exception):
    """A problem the user can fix (bad input, missing file); printed without a traceback."""

    exit_code = 2
