"""Errors the command line reports as one line, without a traceback."""


class SimpsonsError(Exception):
    """A problem with the user's input (missing file, bad dataset, corrupt bundle...)."""
