"""Typed settings from the environment (see :mod:`config.settings`)."""

from config.settings import PROJECT_ROOT, BootError, ConfigError, Settings

__all__ = ["PROJECT_ROOT", "BootError", "ConfigError", "Settings"]
