"""Errors shared across the gateway's modules."""


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the environment variable or flag."""
