"""Errors that name the file, the field at fault and the fix."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input detected before any expensive work.

    The message always names the file (or config key), the field and what to do.
    """

    def __init__(self, path, problem: str, fix: str | None = None, field: str | None = None):
        self.path = str(path) if path is not None else None
        self.field = field
        self.problem = problem
        self.fix = fix
        where = self.path or "<input>"
        if field:
            where += f" [field '{field}']"
        msg = f"{where}: {problem}"
        if fix:
            msg += f" -- fix: {fix}"
        super().__init__(msg)


class ConfigError(InputError):
    """Invalid workflow configuration (the 'path' is the config key)."""

    def __init__(self, key: str, problem: str, fix: str | None = None):
        super().__init__(f"config key '{key}'", problem, fix)
        self.key = key


class PhysicsWarning(UserWarning):
    """Suspicious physics: empty region, no signal left after selection, diverging loss."""
