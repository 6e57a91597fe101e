"""The one exception type the CLI turns into a clean message and a non-zero exit, and one-line messages."""

from __future__ import annotations

import re

MAX_MESSAGE = 2000
# what SQLAlchemy appends to a driver's message: the statement, its parameters and a help link
_NOISE = re.compile(r"^\s*(\[SQL:|\[parameters:|\(Background on this error at)")


class BenchError(Exception):
    """A problem the user can fix (bad input, missing file); printed without a traceback."""

    exit_code = 2


def one_line(text: object, limit: int = MAX_MESSAGE) -> str:
    """Return `text` (a message or an exception) as one line: SQLAlchemy's statement and help link dropped, whitespace folded, at most `limit` characters."""
    lines = [line.strip() for line in str(text).splitlines()]
    kept = " ".join(line for line in lines if line and not _NOISE.match(line))
    kept = " ".join(kept.split())
    return kept if len(kept) <= limit else kept[: limit - 3] + "..."
