"""A resident's own notification preferences: channels, language, SMS quiet hours and time zone.

Each choice set here overrides what the resident told intake; a null falls back to it (services/notify/delivery.py
applies both when a message goes out). Setting them replaces all four at once.
"""

from __future__ import annotations

import uuid

from services.notify.models import Preference, utcnow
from services.notify.notifications import mark_work
from services.notify.repository import Repository
from services.notify.schemas import PreferencesIn


async def replace(repo: Repository, resident_id: uuid.UUID, choices: PreferencesIn) -> Preference:
    """The resident's preferences, now ``choices``. Text messages held back by the old quiet hours are looked at
    again, under the new ones."""
    now = utcnow()
    preference = await repo.preference(resident_id)
    if preference is None:
        preference = Preference(resident_id=resident_id, updated_at=now)
        repo.session.add(preference)
    start, end = choices.quiet_hours.times() if choices.quiet_hours else (None, None)
    preference.channels = list(choices.channels) if choices.channels is not None else None
    preference.language = choices.language
    preference.quiet_hours_start, preference.quiet_hours_end = start, end
    preference.timezone = choices.timezone
    preference.updated_at = now
    await repo.session.flush()
    await repo.recheck_waiting_sms(resident_id)
    mark_work(repo.session)
    return preference
