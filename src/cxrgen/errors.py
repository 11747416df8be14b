"""Errors that reach the user as one clear line instead of a traceback."""


class UserError(Exception):
    """A problem the user can fix (bad path, bad file, bad option). The CLI prints it and exits 2."""
