"""Retention keeps exactly what the policy says."""

from __future__ import annotations

import pytest

from collab.store import Version, VersionKind
from collab.store.retention import Tier, expired, parse_duration, parse_policy

HOUR = 3600.0
DAY = 24 * HOUR
NOW = 1_000_000 * DAY  # far from 0, on a day boundary


def version(id: int, age: float, kind: VersionKind = "auto") -> Version:
    return Version(id, "doc", NOW - age, kind, None, 10, id)


def test_policy_and_durations_parse() -> None:
    assert parse_policy("1h:all,1d:1h,30d:1d") == [
        Tier(HOUR, None),
        Tier(DAY, HOUR),
        Tier(30 * DAY, DAY),
    ]
    assert parse_duration("90s") == 90 and parse_duration("2w") == 14 * DAY
    for bad in ("1h", "1d:1h,1h:all", "1x:all", "1h:often"):
        with pytest.raises(ValueError):
            parse_policy(bad)


def test_keeps_all_of_the_last_hour_one_per_hour_one_per_day_and_nothing_older() -> None:
    tiers = parse_policy("1h:all,1d:1h,30d:1d")
    minute = 60.0
    versions = [
        version(20, 5 * minute),  # last hour: all kept
        version(19, 30 * minute),
        version(18, 59 * minute),
        version(17, 2 * HOUR + 10 * minute),  # same hour as 16: the newer (17) stays
        version(16, 2 * HOUR + 40 * minute),
        version(15, 5 * HOUR + 1 * minute),  # alone in its hour
        version(14, 3 * DAY + 1 * HOUR),  # same day as 13: the newer (14) stays
        version(13, 3 * DAY + 5 * HOUR),
        version(12, 3 * DAY + 6 * HOUR, "named"),  # named: kept whatever its age
        version(11, 40 * DAY),  # older than every tier
        version(10, 45 * DAY, "pre-restore"),  # kept
    ]
    assert expired(versions, tiers, NOW) == [11, 13, 16]


def test_the_newest_version_is_kept_even_when_old() -> None:
    tiers = parse_policy("1h:all")
    assert expired([version(1, 400 * DAY), version(2, 300 * DAY)], tiers, NOW) == [1]
