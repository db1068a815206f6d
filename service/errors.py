"""Typed start-up failures; only the entry points turn them into a line on stderr and an exit code."""

from __future__ import annotations


class StartupError(Exception):
    """The server or client cannot start; the message is one line a person can act on (exit 1)."""

    exit_code = 1


class ConfigError(StartupError):
    """A setting is missing, malformed or names a file that is not usable (exit 2)."""

    exit_code = 2

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem
