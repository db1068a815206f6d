"""Typed start-up failures; only the entry points turn them into a line on stderr and an exit code."""

from __future__ import annotations


class StartupError(Exception):
    """The server or client cannot start; the message is one line a person can act on (exit 1)."""

    exit_code = 1


class ConfigError(StartupError):
    """A setting is missing, malformed or names a file that is not usable (exit 2)."""

    exit_code = 2

    def __init__(self, setting: str, problem: str, *more: tuple[str, str]) -> None:
        # One line per problem: an operator fixes them all in one go, not one start-up at a time.
        super().__init__("\n".join(f"{name}: {text}" for name, text in ((setting, problem), *more)))
        self.setting = setting
        self.problem = problem


def lines(error: StartupError, program: str) -> str:
    """The error as the entry points print it: one line per problem, each starting with ``program``."""
    return "\n".join(f"{program}: {line}" for line in str(error).splitlines())
