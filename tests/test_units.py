"""builder/units.py: the one way sizes are shown and read, and prune's ages read by the one
duration parser (grammar/durations.py)."""
from __future__ import annotations

import pytest

from builder.cache.prune import parse_age
from builder.units import human_size, parse_size

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@pytest.mark.parametrize("count, shown", [
    (0, "0B"), (512, "512B"), (999, "999B"), (1000, "1.0kB"), (12_345, "12.3kB"),
    (12_300_000, "12.3MB"), (999_999, "1000.0kB"), (5 * 10**9, "5.0GB"), (5 * 10**12, "5.0TB"),
    (2 * 10**15, "2.0PB"), (3 * 10**18, "3000.0PB"),
])
def test_sizes_in_logs_and_summaries_keep_one_decimal(count: int, shown: str) -> None:
    assert human_size(count) == shown


@pytest.mark.parametrize("count, shown", [
    (0, "0B"), (999, "999B"), (1000, "1kB"), (4_260_000, "4.26MB"), (123_456_789, "123MB"),
    (5 * 10**12, "5TB"), (2 * 10**15, "2PB"),
])
def test_sizes_in_image_tables_read_like_dockers(count: int, shown: str) -> None:
    assert human_size(count, significant=3) == shown


@pytest.mark.parametrize("text, binary, decimal", [
    ("67108864", 64 * MiB, 64 * MiB), ("6291456b", 6 * MiB, 6 * MiB), ("0", 0, 0),
    ("512m", 512 * MiB, 512 * 10**6), ("1g", GiB, 10**9), ("2G", 2 * GiB, 2 * 10**9),
    ("1.5g", 3 * GiB // 2, 15 * 10**8), ("64MB", 64 * MiB, 64 * 10**6), ("500 MB", 500 * MiB,
                                                                          500 * 10**6),
    ("65536k", 64 * MiB, 65_536_000), ("2t", 2 << 40, 2 * 10**12), ("1p", 1 << 50, 10**15),
    ("64mib", 64 * MiB, 64 * MiB), ("10GiB", 10 * GiB, 10 * GiB), ("3ki", 3 * KiB, 3 * KiB),
    ("  7kb ", 7 * KiB, 7000),
])
def test_sizes_read_in_powers_of_1024_or_on_request_1000(text: str, binary: int,
                                                          decimal: int) -> None:
    assert (parse_size(text), parse_size(text, decimal=True)) == (binary, decimal)


@pytest.mark.parametrize("text", ["", "x", "m", "-1m", "64q", "1e3", "1.m", "5 m b", "5ib",
                                  "5mbb", "0x10"])
def test_what_is_not_a_size_says_so(text: str) -> None:
    with pytest.raises(ValueError, match=r"^not a size: .* \(e\.g\. 500MB, 2GB, 10GiB\)$"):
        parse_size(text)


@pytest.mark.parametrize("text, seconds", [
    ("30m", 1800), ("24h", 86_400), ("7d", 7 * 86_400), ("1.5d", 129_600), ("1h30m", 5400),
    ("45s", 45), ("500ms", 0.5), (" 2h ", 7200), ("0", 0), ("0s", 0),
])
def test_prune_ages_are_go_durations_with_days(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "d", "-1h", "1w", "1 h", "24hours"])
def test_what_is_not_an_age_says_so(text: str) -> None:
    with pytest.raises(ValueError, match=r"^not a duration: .* \(e\.g\. 30m, 24h, 7d\)$"):
        parse_age(text)
