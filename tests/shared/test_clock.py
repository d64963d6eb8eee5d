"""Dates are dates in the city: a moment just after midnight in Seoul is that day, not UTC's; a pinned today wins."""

from __future__ import annotations

import datetime as dt

from shared.clock import Clock
from shared.settings import ServiceSettings


def test_a_moment_falls_on_the_city_s_date_on_both_sides_of_its_midnight() -> None:
    clock = Clock("Asia/Seoul")
    assert clock.date_of(dt.datetime(2026, 1, 1, 14, 59, 59, tzinfo=dt.UTC)) == dt.date(2026, 1, 1)  # 23:59:59 KST
    assert clock.date_of(dt.datetime(2026, 1, 1, 15, 0, tzinfo=dt.UTC)) == dt.date(2026, 1, 2)  # 00:00 KST


def test_today_is_pinned_by_the_settings_and_otherwise_follows_now() -> None:
    pinned = Clock.from_settings(ServiceSettings(today=dt.date(2025, 9, 29)))
    assert pinned.today() == dt.date(2025, 9, 29)
    live = Clock.from_settings(ServiceSettings())
    assert live.today() in {live.date_of(live.now()), live.date_of(live.now() - dt.timedelta(seconds=1))}
    assert live.now().tzinfo is dt.UTC


def test_an_unknown_zone_falls_back_to_korea_s_fixed_offset() -> None:
    clock = Clock("Nowhere/Atlantis")
    assert clock.date_of(dt.datetime(2026, 1, 1, 15, 0, tzinfo=dt.UTC)) == dt.date(2026, 1, 2)
