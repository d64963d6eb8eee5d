"""Working days, the calendar the SLA runs on (the clock is shared.clock).

Conventions (documented on the API too); every date is a date in the offices' time zone:
- A due date is ``sla_days`` working days after the application date: the application day itself is day 0, so an
  application on a Friday with a 3-day SLA is due on the Wednesday after (Mon, Tue, Wed), later if a holiday falls
  in between. As ``sla_days`` is at least 1, a due date is always a working day.
- The due date is the last day on which deciding is on time, the whole of it. Lateness is counted in working days,
  like the SLA itself: a case is *late* on a day when a working day after its due date has begun by then
  (``is_late``). So a case due on Wednesday is breached on Thursday; one due on a Friday is not breached over the
  weekend (no working day of the office has been lost yet) but on Monday, or on the first working day after a
  holiday. The SLA timer records a breach by this rule, and statistics count a decision as on time by the same rule.
- While a case waits on the resident its clock is paused: the request day still counts as worked, the days after it
  up to and including the day the resident answered do not, and the due date moves by that many working days.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from collections.abc import Iterable

import holidays

# The package of every country's calendar: its __init__ imports all of them (about 250 modules more; routing's RSS with
# its calendar made, 105.9 MB against 99.2, and under the load of bench/api.py it had gone over its 150 MB). One
# country's module needs none of the others.
COUNTRIES_PACKAGE = "holidays.countries"


def country_holidays(country: str) -> holidays.HolidayBase:
    """One country's public holidays (``holidays.country_holidays``), importing that country's module alone: unless
    the package of countries was imported already, it is made importable from without running its __init__."""
    if COUNTRIES_PACKAGE not in sys.modules:
        spec = importlib.util.find_spec(COUNTRIES_PACKAGE)
        if spec is not None:
            sys.modules[COUNTRIES_PACKAGE] = importlib.util.module_from_spec(spec)  # its __path__, nothing run
    return holidays.country_holidays(country)


class WorkingCalendar:
    """Weekends, the public holidays of one country, and extra closure days are not working days."""

    def __init__(self, country: str = "KR", closures: Iterable[dt.date] = ()) -> None:
        self.country = country
        self.holidays = country_holidays(country)
        self.closures = frozenset(closures)
        # Each day's answer, kept: a look in the holidays is slow, and every case routed asks of the same days (its
        # due date, its priority).
        self._working: dict[dt.date, bool] = {}
        # Each due date reckoned, kept too: every case routed counts its SLA's days from the same few dates, one
        # day at a time (2 % of routing's CPU in a pipeline run, py-spy).
        self._after: dict[tuple[dt.date, int], dt.date] = {}

    def is_working_day(self, day: dt.date) -> bool:
        working = self._working.get(day)
        if working is None:
            working = self._working[day] = day.weekday() < 5 and day not in self.holidays and day not in self.closures
        return working

    def holiday_name(self, day: dt.date) -> str | None:
        if day in self.closures:
            return "closure"
        name = self.holidays.get(day)
        return str(name) if name else None

    def add_working_days(self, start: dt.date, days: int) -> dt.date:
        """The ``days``-th working day after ``start`` (``start`` itself is not counted); ``start`` for 0."""
        found = self._after.get((start, days))
        if found is not None:
            return found
        if days < 0:
            raise ValueError("days must not be negative")
        day, left = start, days
        while left:
            day += dt.timedelta(days=1)
            if self.is_working_day(day):
                left -= 1
        self._after[start, days] = day
        return day

    def working_days_between(self, start: dt.date, end: dt.date) -> int:
        """Working days ``d`` with ``start < d <= end`` (0 when ``end <= start``)."""
        count, day = 0, start
        while day < end:
            day += dt.timedelta(days=1)
            if self.is_working_day(day):
                count += 1
        return count

    def last_working_day(self, day: dt.date) -> dt.date:
        """``day`` if it is a working day, else the working day before it."""
        while not self.is_working_day(day):
            day -= dt.timedelta(days=1)
        return day

    def is_late(self, due_date: dt.date, day: dt.date) -> bool:
        """Whether ``day`` is past the SLA of ``due_date``: a working day after the due date has begun by then."""
        return self.working_days_between(due_date, day) > 0

    def late_if_due_before(self, today: dt.date) -> dt.date:
        """The cases late ``today`` are those due before this date (``is_late`` as a bound a query can use)."""
        return self.last_working_day(today)
