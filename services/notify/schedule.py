"""When to try again: quiet hours for SMS, and exponential backoff with jitter for retries."""

from __future__ import annotations

import datetime as dt
import random
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(name: str | None, default: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or default)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def is_known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def quiet_until(now: dt.datetime, start: dt.time | None, end: dt.time | None, tz: ZoneInfo) -> dt.datetime | None:
    """When the quiet hours that ``now`` falls in end (UTC), or None when ``now`` is not in quiet hours.

    ``start``..``end`` is in the resident's local time and may cross midnight (22:00..07:00). The end is exclusive:
    at 07:00 sharp an SMS may go."""
    if start is None or end is None or start == end:
        return None
    local = now.astimezone(tz)
    moment = local.time().replace(tzinfo=None)
    today = local.date()
    if start < end:
        if not (start <= moment < end):
            return None
        ends = dt.datetime.combine(today, end, tzinfo=tz)
    else:
        if moment >= start:
            ends = dt.datetime.combine(today + dt.timedelta(days=1), end, tzinfo=tz)
        elif moment < end:
            ends = dt.datetime.combine(today, end, tzinfo=tz)
        else:
            return None
    return ends.astimezone(dt.UTC)


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): exponential, capped, with "equal jitter"
    (half fixed, half random) so that a crowd of failures does not retry in lockstep yet never retries at once."""
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    generator: random.Random = rng or _rng
    return float(ceiling / 2 + generator.uniform(0, ceiling / 2))


_rng = random.SystemRandom()
