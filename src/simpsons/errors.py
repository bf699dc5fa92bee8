"""Errors the command line reports as one line, without a traceback."""

from __future__ import annotations

from collections.abc import Callable


class SimpsonsError(Exception):
    """A problem with the user's input (missing file, bad dataset, corrupt bundle...)."""


class ParameterError(SimpsonsError):
    """A bad value for one parameter of a library function; the message names the parameter.

    ``message`` holds ``{name}`` where the parameter's name goes, so that a front end can name it its own way
    (the command line names its flag).
    """

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        self.message = message
        super().__init__(message.replace("{name}", parameter))

    def naming(self, name_of: Callable[[str], str]) -> str:
        """The message with the parameter called ``name_of(parameter)``."""
        return self.message.replace("{name}", name_of(self.parameter))
