"""Errors a user can cause: each names the file or setting and says expected versus found."""


class FcnsegError(Exception):
    """Base class of every error a user can cause; the CLI prints it as one line."""


class ConfigError(FcnsegError):
    """A setting, flag or config file is wrong."""


class CheckpointError(FcnsegError):
    """A weights file cannot be read or does not fit the model."""


class DataError(FcnsegError):
    """A data file or folder is missing, unreadable or inconsistent.

    ``DataError(reason, path=p)`` reads ``"p: reason"``; ``.path`` and ``.reason`` stay apart, so that a
    report that already names the file (a scan's problem list, a folder run's failure table) can
    print the reason alone instead of repeating the path.
    """

    def __init__(self, message: str, *, path=None):
        self.path = None if path is None else str(path)
        self.reason = message
        super().__init__(message if path is None else f"{path}: {message}")
