"""notify's seed: the partners of services/notify/partners.yaml with their grants and NATS subscriptions, once."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from onestop.natsauth import load_partners as nats_partners
from services.notify.main import MIGRATIONS
from services.notify.models import Partner, PartnerGrant, Subscription
from services.notify.seed import load_partners, seed
from services.notify.settings import PACKAGE_DIR, NotifySettings
from shared.db import Database
from shared.migrations import upgrade
from shared.problems import UnprocessableContent


async def _counts(url: str) -> tuple[int, int, int]:
    db = Database(url)
    try:
        async with db.session() as session:
            return (
                int(await session.scalar(select(func.count()).select_from(Partner)) or 0),
                int(await session.scalar(select(func.count()).select_from(PartnerGrant)) or 0),
                int(await session.scalar(select(func.count()).select_from(Subscription)) or 0),
            )
    finally:
        await db.dispose()


async def test_seeding_twice_creates_the_partners_once(database_url: str, tmp_path: Path) -> None:
    await upgrade(database_url, MIGRATIONS)
    settings = NotifySettings(database_url=database_url, data_dir=tmp_path)
    partners = load_partners(settings.partners_file)
    grants = sum(len(p.grants) for p in partners)
    first = await seed(settings)
    assert f"{len(partners)} partners ({len(partners)} new), {grants} grants" in first
    assert await _counts(database_url) == (len(partners), grants, sum(len(p.subscriptions) for p in partners))
    second = await seed(settings)
    assert "(0 new), 0 grants and 0 subscriptions added" in second
    assert await _counts(database_url) == (len(partners), grants, sum(len(p.subscriptions) for p in partners))
    # The runner gives exactly these partners a NATS user.
    assert [p.id for p in nats_partners(PACKAGE_DIR / "partners.yaml")] == [p.id for p in partners]


def test_a_seed_file_with_an_ungranted_subscription_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "partners.yaml"
    bad.write_text(
        "partners:\n  - id: some-bank\n    name: Bank\n    grants: [{event_type: case.decided, purpose: payment}]\n"
        "    subscriptions:\n      - {transport: nats, event_types: [case.routed]}\n"
    )
    with pytest.raises(ValueError, match="not granted"):
        load_partners(bad)


def test_a_seed_grant_without_its_purpose_or_with_one_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "partners.yaml"
    for grants, why in [
        ("[case.decided]", "grants.0"),
        ("[{event_type: case.decided}]", "grants.0.purpose"),
        ("[{event_type: case.decided, purpose: marketing}]", "grants.0.purpose"),
    ]:
        bad.write_text(f"partners:\n  - id: some-bank\n    name: Bank\n    grants: {grants}\n")
        with pytest.raises(ValueError, match=why):
            load_partners(bad)
    bad.write_text("partners:\n  - id: some-bank\n    name: Bank\n    grants: [{event_type: case.decided, "
                   "purpose: statistics}]\n")  # fmt: skip
    with pytest.raises(UnprocessableContent, match="statistics are served by aggregate feeds"):
        load_partners(bad)
