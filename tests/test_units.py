from __future__ import annotations

import pytest

from autocompress.errors import SizeFormatError
from autocompress.units import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1MB", 1_000_000),
        ("1MiB", 1_048_576),
        ("500KB", 500_000),
        ("500KiB", 512_000),
        ("50000", 50_000),
        ("1.5MB", 1_500_000),
        ("50kb", 50_000),
        (" 2 GB ", 2_000_000_000),
        ("100B", 100),
        (1234, 1234),
    ],
)
def test_parse_size_accepts_explicit_units(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["1XB", "", "abc", "-5", "0", "1.5", "MB", "1 M B", "0KB"])
def test_parse_size_refuses_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(SizeFormatError) as error:
        parse_size(text)
    message = str(error.value)
    assert "KiB" in message or "positive" in message or "whole number" in message


def test_format_size_is_decimal() -> None:
    assert format_size(49_712) == "49,712 B (49.7 KB)"
    assert format_size(1_000_000) == "1,000,000 B (1.00 MB)"
