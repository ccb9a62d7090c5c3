"""One exception type for every mistake a user can fix.

The CLI turns a :class:`UserError` into a single line on stderr and exit code 2, so
messages must say what is wrong *and* what to do, in one sentence.
"""


class UserError(Exception):
    """Bad input the user can correct (missing file, wrong dataset, unknown method...)."""


def require_file(path: str, what: str = "file") -> None:
    """Fail with one line when ``path`` is not an existing file."""
    import os

    if not os.path.isfile(path):
        raise UserError(f"{what} not found: {path!r} — check the path (relative paths start at {os.getcwd()})")
