"""Errors meant for people: the CLI prints their message and exits non-zero."""


class JaxdqnError(Exception):
    """Base class for every error the command line reports without a traceback."""


class ConfigError(JaxdqnError, ValueError):
    """A configuration key, value or environment id is not allowed."""


class CheckpointError(JaxdqnError):
    """A checkpoint is missing, unreadable or does not fit the network."""


class CheckpointWriteError(CheckpointError):
    """Writing a checkpoint failed (disk full, quota, permissions); earlier ones are intact."""


class NonFiniteError(JaxdqnError):
    """Training produced nan or inf in a task's loss or parameters; nothing of that state is saved."""
