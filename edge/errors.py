"""Errors every edgeport command turns into one line and a documented exit code."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType


class EdgeportError(Exception):
    """A failure with a message meant for the user (exit code 1).

    `hint` says what to do about it; the CLI prints both on one line.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(EdgeportError):
    """Bad usage or bad input: a missing file, an unreadable model (exit code 2)."""

    exit_code = 2


class ModelFormatError(InputError):
    """A model file that is not what it claims to be, or is damaged."""


class MissingDependency(InputError):
    """An optional package is not installed; the hint names the pip extra."""

    def __init__(self, package: str, extra: str, what: str | None = None) -> None:
        what = what or package
        super().__init__(f"{what} needs the Python package '{package}', which is not installed",
                         f"pip install 'edgeport[{extra}]'")
        self.package = package
        self.extra = extra


class EdgeTPUError(EdgeportError):
    """The Edge TPU is needed but cannot be used (no device, no libedgetpu)."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message, or its type name; never empty, never fails."""
    try:
        text = str(error)
    except Exception:  # a broken __str__ must not hide the error itself
        text = ""
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(error).__name__


def require(module: str, extra: str, what: str | None = None,
            package: str | None = None) -> ModuleType:
    """Import `module` (a dotted name) or raise MissingDependency naming the pip extra.

    `package` is the pip name when it differs from the module's (ai-edge-litert, tensorflow-cpu).
    Only a missing module becomes MissingDependency; an installed package that fails to import
    for another reason raises as it is, since that is a broken install, not a missing extra.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = module.split(".")[0]
        if e.name and e.name.split(".")[0] != top:
            raise
        raise MissingDependency(package or top, extra, what) from None
