"""The one registry of quantizers: by name (plans) and by permanent file id (packed files)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from autocompress.errors import AutocompressError, PackFormatError
from autocompress.quantizers._base import Quantizer

MAX_FILE_ID = 255  # the packed file stores the id in one byte

_REGISTRY: dict[str, Quantizer] = {}
QUANTIZER_REGISTRY: Mapping[str, Quantizer] = MappingProxyType(_REGISTRY)
"""Every registered quantizer by name (read-only; add one with :func:`register_quantizer`)."""


class UnknownQuantizerError(AutocompressError, ValueError):
    """A quantizer name that no registered quantizer has."""


def register_quantizer(quantizer: Quantizer) -> Quantizer:
    """Add ``quantizer`` to the registry and return it.

    Refuses (``ValueError``, registry unchanged) a name or a file id that a
    registered quantizer already has, and a file id outside ``0..255``.
    """
    if not isinstance(quantizer, Quantizer):
        raise TypeError(f"expected a Quantizer instance, got {type(quantizer).__name__}")
    name, file_id = getattr(quantizer, "name", None), getattr(quantizer, "file_id", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{type(quantizer).__name__}: name must be a non-empty string, got {name!r}")
    if isinstance(file_id, bool) or not isinstance(file_id, int) or not 0 <= file_id <= MAX_FILE_ID:
        raise ValueError(f"quantizer {name!r}: file_id must be an integer in 0..{MAX_FILE_ID}, got {file_id!r}")
    if name in _REGISTRY:
        raise ValueError(f"a quantizer named {name!r} is already registered ({_REGISTRY[name]!r})")
    for other in _REGISTRY.values():
        if other.file_id == file_id:
            raise ValueError(
                f"quantizer {name!r}: file id {file_id} already belongs to {other.name!r}; file ids are permanent, "
                f"take one no quantizer has ever used"
            )
    _REGISTRY[name] = quantizer
    return quantizer


def get_quantizer(name: str) -> Quantizer:
    """The registered quantizer called ``name``; :class:`UnknownQuantizerError` lists the known ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownQuantizerError(f"unknown quantizer {name!r}; known quantizers: {', '.join(quantizer_names())}") from None


def quantizer_for_file_id(file_id: int) -> Quantizer:
    """The registered quantizer whose permanent file id is ``file_id``; :class:`PackFormatError` if none."""
    for quantizer in _REGISTRY.values():
        if quantizer.file_id == file_id:
            return quantizer
    known = ", ".join(f"{q.file_id} ({q.name})" for q in sorted(_REGISTRY.values(), key=lambda q: q.file_id))
    raise PackFormatError(
        f"unknown quantizer id {file_id} (this autocompress knows {known}); "
        f"the file may come from a newer autocompress, or be corrupted"
    )


def quantizer_names() -> tuple[str, ...]:
    """Names of the registered quantizers, ordered by file id."""
    return tuple(q.name for q in sorted(_REGISTRY.values(), key=lambda q: q.file_id))
