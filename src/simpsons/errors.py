"""Errors the command line reports as one line, without a traceback."""

from __future__ import annotations

from collections.abc import Callable


class SimpsonsError(Exception):
    """A problem with the user's input (missing file, bad dataset, corrupt bundle...)."""


class ParameterError(SimpsonsError):
    """A bad value for one parameter of a library function; the message names the parameter.

    ``message`` holds ``{name}`` where the parameter's name goes, and ``{other}`` for each parameter in
    ``mentions`` that it also names, so that a front end can name them its own way (the command line names
    its flags).
    """

    def __init__(self, parameter: str, message: str, *, mentions: tuple[str, ...] = ()) -> None:
        self.parameter = parameter
        self.message = message
        self.mentions = mentions
        super().__init__(self.naming(str))

    def naming(self, name_of: Callable[[str], str]) -> str:
        """The message with each parameter ``p`` called ``name_of(p)``."""
        text = self.message.replace("{name}", name_of(self.parameter))
        for other in self.mentions:
            text = text.replace("{" + other + "}", name_of(other))
        return text
