"""Errors that mean "the user asked for something we cannot do".

The CLI turns every :class:`DstbenchError` into one line on stderr and exit code 2. Anything else that
escapes is a bug in dstbench and keeps its traceback, so the two are never confused.
"""


class DstbenchError(Exception):
    """Bad input: an unknown name, an out-of-range value, missing or corrupt data or checkpoints."""


class ConfigError(DstbenchError):
    """An option, hyper-parameter or config file is invalid."""


class DataError(DstbenchError):
    """A dataset is missing, unreadable or malformed."""


class CheckpointError(DstbenchError):
    """A checkpoint cannot be read, or does not belong to the run being resumed."""


class StorageError(DstbenchError):
    """A file cannot be written: full disk, read-only or unwritable location, a file where a folder should be."""


class TrainingDiverged(DstbenchError):
    """The training loss became non-finite; the last good checkpoint is left as it was."""


class MaskInvariantError(RuntimeError):
    """A method returned masks the engine cannot accept (a bug in the method, not bad user input)."""
