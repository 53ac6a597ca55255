"""Errors the user can fix: printed as one line by the CLI, no traceback."""


class UserError(Exception):
    """A bad argument, an unreachable or empty source, an unwritable destination..."""
