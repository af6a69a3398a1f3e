"""Sizes and durations with explicit units: ``1MB`` = 1,000,000 bytes, ``1MiB`` = 1,048,576; ``2h``, ``90m``."""

from __future__ import annotations

import re

from autocompress.errors import DurationFormatError, SizeFormatError

_UNIT_BYTES: dict[str, int] = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*$")
ACCEPTED_FORMS = (
    "an integer number of bytes (50000) or a number with a unit: B, KB, MB, GB (powers of 1000) "
    "or KiB, MiB, GiB (powers of 1024), e.g. 50KB, 1.5MB, 512KiB"
)


def parse_size(text: str | int) -> int:
    """Return the number of bytes that ``text`` names; refuse anything ambiguous."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise SizeFormatError(f"size must be positive, got {text}")
        return text
    match = _SIZE_PATTERN.match(str(text))
    unit = match.group(2).lower() if match else ""
    if match is None or (unit not in _UNIT_BYTES and unit != ""):
        raise SizeFormatError(f"cannot read {text!r} as a size; use {ACCEPTED_FORMS}")
    number = float(match.group(1))
    multiplier = _UNIT_BYTES[unit] if unit else 1
    if not unit and "." in match.group(1):
        raise SizeFormatError(f"a plain size is a whole number of bytes, got {text!r}; use {ACCEPTED_FORMS}")
    size = round(number * multiplier)
    if size <= 0:
        raise SizeFormatError(f"size must be positive, got {text!r}")
    return size


def format_size(n_bytes: int) -> str:
    """Human-readable decimal size, e.g. ``49,712 B (49.7 KB)``."""
    if n_bytes >= 1000**2:
        return f"{n_bytes:,} B ({n_bytes / 1000**2:.2f} MB)"
    if n_bytes >= 1000:
        return f"{n_bytes:,} B ({n_bytes / 1000:.1f} KB)"
    return f"{n_bytes:,} B"


_DURATION_UNITS: dict[str, float] = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | float) -> float:
    """Seconds in ``text``: ``7200``, ``2h``, ``90m``, ``45s`` (a number alone is seconds)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    cleaned = str(text).strip().lower()
    try:
        if cleaned and cleaned[-1] in _DURATION_UNITS:
            return float(cleaned[:-1]) * _DURATION_UNITS[cleaned[-1]]
        return float(cleaned)
    except ValueError:
        raise DurationFormatError(f"cannot read {text!r} as a duration; use seconds (7200) or 2h, 90m, 45s") from None
