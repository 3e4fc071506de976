"""Errors every edgeport command turns into one line and a documented exit code."""


class EdgeportError(Exception):
    """A failure with a message meant for the user (exit code 1).

    `hint` says what to do about it; the CLI prints both on one line.
    """

    exit_code = 1

    def __init__(self, message, hint=None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self):
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(EdgeportError):
    """Bad usage or bad input: a missing file, an unreadable model (exit code 2)."""

    exit_code = 2


class ModelFormatError(InputError):
    """A model file that is not what it claims to be, or is damaged."""


class MissingDependency(InputError):
    """An optional package is not installed; the hint names the pip extra."""

    def __init__(self, package, extra, what=None):
        what = what or package
        super().__init__(f"{what} needs the Python package '{package}', which is not installed",
                         f"pip install 'edgeport[{extra}]'")
        self.package = package
        self.extra = extra


class EdgeTPUError(EdgeportError):
    """The Edge TPU is needed but cannot be used (no device, no libedgetpu)."""
