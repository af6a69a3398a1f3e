"""The one exception family the CLI turns into a clear message (never a traceback)."""

from __future__ import annotations


class AutocompressError(Exception):
    """Base class: its message tells the user what went wrong and what to do."""


class SizeFormatError(AutocompressError, ValueError):
    """A size string such as ``1XB`` that is not one of the accepted forms."""


class DurationFormatError(AutocompressError, ValueError):
    """A duration such as ``2x`` that is not seconds or a number with s, m or h."""


class PlanError(AutocompressError, ValueError):
    """A plan (YAML or in memory) that is malformed or does not fit the model."""


class CheckpointError(AutocompressError):
    """A checkpoint that is missing, unreadable, or made for another model."""


class DataError(AutocompressError):
    """A data set that is absent and cannot be downloaded, or is malformed."""


class ModelSpecError(AutocompressError, ValueError):
    """A ``--model`` value that names no registered model or importable factory."""


class PackFormatError(AutocompressError):
    """A packed ``.acz`` file that is truncated, corrupted, or of another version."""


class TrainingDivergedError(AutocompressError):
    """The loss became NaN or infinite during training."""
