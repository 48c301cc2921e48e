"""Reading settings from the environment: typed, range-checked, refused at start-up.

Every service's ``config.load(env)`` reads its variables through ``Env``. A value the
service cannot run with raises ``SettingsError`` naming the variable, so a bad setting
stops the process before it serves instead of reaching a user as a 4xx or 5xx.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import TypeVar

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

N = TypeVar("N", int, float)


class SettingsError(ValueError):
    """A setting has a value the service cannot run with; the message names the variable."""


class Env:
    """Typed access to an environment mapping; every reader raises SettingsError."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def optional(self, name: str) -> str | None:
        """The stripped value, or None when the variable is unset or blank."""
        value = self._env.get(name, "").strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        return self.optional(name) or default

    def choice(self, name: str, default: str, choices: Collection[str]) -> str:
        value = self.text(name, default).lower()
        if value not in choices:
            raise SettingsError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        return value

    def integer(
        self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self._parsed(name, int, "a whole number")
        return default if value is None else _in_range(name, value, minimum, maximum)

    def number(
        self,
        name: str,
        default: float,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        positive: bool = False,
    ) -> float:
        """A finite float; ``positive`` refuses zero and below (for timeouts and sizes)."""
        value = self._parsed(name, float, "a number")
        if value is None:
            return default
        if not math.isfinite(value):
            raise SettingsError(f"{name} must be a finite number, not {value}")
        if positive and value <= 0:
            raise SettingsError(f"{name} must be above 0, not {value:g}")
        return _in_range(name, value, minimum, maximum)

    def _parsed(self, name: str, parse: Callable[[str], N], what: str) -> N | None:
        raw = self.optional(name)
        if raw is None:
            return None
        try:
            return parse(raw)
        except ValueError:
            raise SettingsError(f"{name} must be {what}, not {raw!r}") from None

    def flag(self, name: str, default: bool) -> bool:
        raw = self._env.get(name)
        if raw is None:
            return default
        value = raw.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise SettingsError(f"{name} must be 1 or 0 (true/false, yes/no, on/off), not {raw!r}")


def _in_range(name: str, value: N, minimum: N | None, maximum: N | None) -> N:
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name} must be at most {maximum}, not {value}")
    return value
