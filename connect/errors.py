"""Errors the helper reports: each one line, with a reason the logs and tests can match on."""

from __future__ import annotations


class ConnectError(Exception):
    """A failure worth one clear line to the user. `reason` is a short fixed word; the message never holds a secret."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(ConnectError):
    """A bad or missing setting, found before anything starts."""

    def __init__(self, message: str) -> None:
        super().__init__("config", message)
