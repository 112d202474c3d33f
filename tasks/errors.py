"""Errors a user can act on: each names the thing, what was expected, what was found, and the fix."""

from __future__ import annotations


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


class DatasetVersionNotFound(PipelineError):
    """No published manifest exists for a requested dataset version."""


class ConfigError(PipelineError):
    """A configuration value is out of range or of the wrong type."""
