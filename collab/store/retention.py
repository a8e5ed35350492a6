"""Which automatic versions to keep as they age. Pure.

A policy is a list of tiers, youngest first, written `1h:all,1d:1h,30d:1d`: keep every
automatic version younger than an hour, one per hour (the newest of each hour) of those
younger than a day, one per day of those younger than 30 days, and none older. Named and
pre-restore versions are always kept, and so is a document's newest version, which
loading starts from.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from collab.store import Version

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")


@dataclass(frozen=True, slots=True)
class Tier:
    """Versions younger than `within` seconds keep one per `every` seconds (None: all)."""

    within: float
    every: float | None


def parse_duration(text: str) -> float:
    """`90s`, `15m`, `1h`, `30d`, `2w` -> seconds.

    Raises:
        ValueError: not a number followed by one of s, m, h, d, w.
    """
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 1h, 30d or 2w")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_policy(text: str) -> list[Tier]:
    """`1h:all,1d:1h,30d:1d` -> tiers, youngest first.

    Raises:
        ValueError: a tier is not `age:all` or `age:interval`, or ages do not grow.
    """
    tiers = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        within, sep, every = entry.partition(":")
        if not sep:
            raise ValueError(f"retention tier {entry!r} is not age:all or age:interval")
        tiers.append(
            Tier(parse_duration(within), None if every == "all" else parse_duration(every))
        )
    if any(later.within <= earlier.within for earlier, later in itertools.pairwise(tiers)):
        raise ValueError("retention tiers must be given youngest first, with growing ages")
    return tiers


def expired(snapshots: Iterable[Version], tiers: list[Tier], now: float) -> list[int]:
    """The ids of the automatic versions the policy no longer keeps, oldest first."""
    versions = sorted(snapshots, key=lambda s: (s.created_at, s.id), reverse=True)
    newest = versions[0].id if versions else None
    kept_buckets: set[tuple[int, int]] = set()
    dropped = []
    for version in versions:
        if version.kind != "auto" or version.id == newest:
            continue
        age = now - version.created_at
        tier = next((i for i, t in enumerate(tiers) if age <= t.within), None)
        if tier is None:
            dropped.append(version.id)
            continue
        every = tiers[tier].every
        if every is None:
            continue
        bucket = (tier, math.floor(version.created_at / every))
        if bucket in kept_buckets:
            dropped.append(version.id)
        else:
            kept_buckets.add(bucket)  # the newest version of its bucket stays
    return sorted(dropped)
