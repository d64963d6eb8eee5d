"""Now, and today's date in the city's time zone: what every service dates things by (an application filed at 00:30
in Seoul is dated that day, not UTC's; a rule version is in force on a date there; a due date is a date there).

``settings.today`` pins the date, for tests and drills; the time itself is always the real one (UTC)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.settings import ServiceSettings

# Korea has kept one offset, without daylight saving, since 1988: the fallback when the system has no tz database.
_KST = dt.timezone(dt.timedelta(hours=9), "KST")


class Clock:
    def __init__(self, timezone: str = "Asia/Seoul", fixed_today: dt.date | None = None) -> None:
        try:
            self.tz: dt.tzinfo = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            self.tz = _KST
        self.fixed_today = fixed_today

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> Clock:
        return cls(settings.timezone, settings.today)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def today(self) -> dt.date:
        if self.fixed_today is not None:
            return self.fixed_today
        return self.now().astimezone(self.tz).date()

    def date_of(self, moment: dt.datetime) -> dt.date:
        """The date a moment falls on in the city."""
        return moment.astimezone(self.tz).date()
