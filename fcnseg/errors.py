"""Errors a user can cause: each names the file or setting and says expected versus found."""


class FcnsegError(Exception):
    """Base class of every error a user can cause; the CLI prints it as one line."""


class ConfigError(FcnsegError):
    """A configuration file or flag is malformed, unknown or inconsistent."""


class CheckpointError(FcnsegError):
    """A weights file is missing, truncated, of an unknown layout or does not fit the model."""


class DataError(FcnsegError):
    """A data set root, split file, image or mask is missing or malformed."""
