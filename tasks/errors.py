"""Errors a user can act on: each names the thing, what was expected, what was found, and the fix."""

from __future__ import annotations

import errno

# A full disk (ENOSPC), a full quota (EDQUOT), a file-size limit (EFBIG): all mean "no room for this write here".
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class PipelineError(Exception):
    """Base class: the CLI prints these without a traceback and exits non-zero."""


class DatasetError(PipelineError):
    """A raw Fashion-MNIST file is missing, corrupt or not the expected content."""


class IdxFormatError(DatasetError):
    """An IDX header or body field is not what the format requires."""

    def __init__(self, file: str, field: str, expected: object, found: object, fix: str = "") -> None:
        self.file, self.field, self.expected, self.found = file, field, expected, found
        message = f"{file}: IDX field '{field}': expected {expected}, found {found}"
        super().__init__(message + (f". {fix}" if fix else ""))


class ChecksumError(DatasetError):
    """The decompressed bytes differ from the published Fashion-MNIST content."""


class StoreError(PipelineError):
    """The object store cannot be reached, or refused an operation."""


class StoreUnreachable(StoreError):
    """The object store did not answer at all (connection refused or timed out): an outage may end by itself."""


class DatasetVersionNotFound(PipelineError):
    """No published manifest exists for a requested dataset version."""


class ConfigError(PipelineError):
    """A configuration value is out of range or of the wrong type."""


class ChampionFileError(PipelineError):
    """models/champion.json exists but is not a champion pointer (garbage, cut short, edited by hand).

    Not a StoreError: the store answered, and its answer will not change on a retry (StoreError is what the
    run's tasks retry); the file needs a person, so the message names it and the repair."""

    def __init__(self, url: str, problem: str, after: str = "") -> None:
        self.url, self.problem = url, problem
        super().__init__(f"{url} is not a readable champion pointer: {problem}; restore it from a backup, or "
                         f"delete it to start a new champion history (models in runs/ are not affected){after}")


class CheckpointError(PipelineError):
    """A trial checkpoint folder is incomplete or damaged (a save or copy cut short): resuming from it would fail
    deep inside Keras ("File not found", zip or pickle errors), so it is one line naming the folder instead."""


class DiskFullError(PipelineError):
    """A write ran out of space (ENOSPC, EDQUOT, or EFBIG from a file-size limit): one line saying where."""


class IncompatibleVersion(PipelineError):
    """An installed library lacks an internal the project relies on (checked when its *_compat module loads)."""


class LeaseLost(PipelineError):
    """This process no longer holds its run's lease (another process took the run over, or the lease lapsed): it
    stops and writes nothing more, and says so in one line."""
