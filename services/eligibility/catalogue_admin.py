"""Changing the catalogue: a new rule version through ``PUT /v1/programs/{code}``, and seeding from the YAML files.

No version in force is ever edited or replaced retroactively: a new version takes effect after today, and a YAML
change to a version already in force is added as a new version from tomorrow."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from services.eligibility import catalogue_views
from services.eligibility.catalogue import CatalogueFiles, content_hash, requires
from services.eligibility.models import MedianIncomeRow, ProgramRow, RuleVersionRow
from services.eligibility.repository import Repository
from services.eligibility.rules.compile import RuleInvalid, compile_version
from services.eligibility.rules.lint import find_cycle
from services.eligibility.schemas import ProgramDetail
from services.eligibility.specs import ProgramAttributes, ProgramVersionPut, VersionSpec, version_document
from services.eligibility.store import CatalogueStore
from shared.problems import UnprocessableContent

log = logging.getLogger(__name__)


class RuleRejected(UnprocessableContent):
    slug = "rule-invalid"
    title = "Invalid rule version"


@dataclass
class PutResult:
    created: bool
    version: int
    program: ProgramDetail  # as it stands now, with the new version
    superseded: list[int] = field(default_factory=list)


async def put_program_version(
    repo: Repository, store: CatalogueStore, code: str, body: ProgramVersionPut, *, actor: str, now: dt.datetime
) -> PutResult:
    """Add a rule version (and create the program, or update its attributes). Refuses, with the field named: a
    version taking effect today or earlier, unknown facts or programs, type errors, cycles, malformed trees."""
    today = store.today()
    spec = body.version
    if spec.effective_from <= today:
        raise RuleRejected.for_field(
            "version.effective_from",
            f"must be after today ({today.isoformat()}): a version in force is never edited or replaced "
            "retroactively; give the date the new rule takes effect",
            type_="retroactive",
        )
    catalogue = await store.get(repo)  # before anything is written (see CatalogueStore.get)
    try:
        rule = compile_version(
            spec, catalogue.facts, set(catalogue.programs) | {code}, own_code=code, prefix="version."
        )
    except RuleInvalid as exc:
        raise RuleRejected(f"The rule version is not valid: {exc}", errors=exc.errors) from None
    graph = {c: requires(p) for c, p in catalogue.programs.items()}
    graph[code] = graph.get(code, set()) | set(rule.refs)
    cycle = find_cycle(graph)
    if cycle:
        raise RuleRejected.for_field(
            "version.rule", f"programs would require each other: {' -> '.join(cycle)}", type_="cycle"
        )
    attributes = ProgramAttributes.model_validate(body.model_dump(exclude={"version"}))
    program = await repo.program_row(code, for_update=True)
    created = program is None
    if program is None:
        repo.session.add(
            ProgramRow(
                code=code,
                department=attributes.department.value,
                attributes=attributes.model_dump(mode="json"),
                origin="api",
                created_at=now,
                updated_at=now,
            )
        )
        await repo.session.flush()
    else:
        program.department = attributes.department.value
        program.attributes = attributes.model_dump(mode="json")
        program.updated_at = now
    versions = await repo.version_rows(code)
    # Versions not yet in force that the new one overtakes are kept, marked superseded.
    overtaken = [v for v in versions if v.superseded_at is None and v.effective_from >= spec.effective_from]
    await repo.supersede_versions([v.id for v in overtaken], now)
    number = max((v.version for v in versions), default=0) + 1
    document = version_document(spec)
    repo.session.add(
        RuleVersionRow(
            program_code=code,
            version=number,
            effective_from=spec.effective_from,
            effective_to=spec.effective_to,
            document=document,
            content_hash=content_hash(document),
            seed_hash=None,
            origin="api",
            created_by=actor,
            created_at=now,
        )
    )
    await repo.bump_catalogue_revision(now)
    log.info("rule version added", extra={"program": code, "version": number, "superseded": len(overtaken)})
    return PutResult(created, number, await catalogue_views.program(repo, store, code), [v.version for v in overtaken])


# ---------------------------------------------------------------------------------------------- seeding


@dataclass
class SeedSummary:
    programs: int = 0
    new_programs: int = 0
    changed_programs: int = 0
    versions_added: int = 0
    versions_moved: int = 0
    median_years: int = 0
    median_rows_added: int = 0
    median_rows_kept: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.new_programs or self.changed_programs or self.versions_added or self.median_rows_added)

    def line(self) -> str:
        return (
            f"{self.programs} programs ({self.new_programs} new, {self.changed_programs} changed), "
            f"{self.versions_added} rule versions added ({self.versions_moved} moved to tomorrow: in force already), "
            f"median income for {self.median_years} years ({self.median_rows_added} rows added)"
        )


async def seed_catalogue(repo: Repository, files: CatalogueFiles, *, today: dt.date, now: dt.datetime) -> SeedSummary:
    """Load the YAML catalogue idempotently: a second run changes nothing; a changed YAML adds versions."""
    summary = SeedSummary(programs=len(files.programs), median_years=len(files.median_years))
    await _seed_medians(repo, files, today, summary)
    tomorrow = today + dt.timedelta(days=1)
    for entry in files.programs:
        attributes = ProgramAttributes.model_validate(entry.model_dump(exclude={"code", "versions"}))
        attributes_json = attributes.model_dump(mode="json")
        program = await repo.program_row(entry.code, for_update=True)
        if program is None:
            repo.session.add(
                ProgramRow(
                    code=entry.code,
                    department=attributes.department.value,
                    attributes=attributes_json,
                    origin="seed",
                    created_at=now,
                    updated_at=now,
                )
            )
            await repo.session.flush()
            for number, spec in enumerate(entry.versions, start=1):
                _add_version(repo, entry.code, number, spec, content_hash(version_document(spec)), now)
            summary.new_programs += 1
            summary.versions_added += len(entry.versions)
            continue
        if program.attributes != attributes_json:
            program.attributes = attributes_json
            program.department = attributes.department.value
            program.updated_at = now
            summary.changed_programs += 1
        versions = await repo.version_rows(entry.code)
        known = {v.seed_hash for v in versions} | {v.content_hash for v in versions}
        for spec in entry.versions:
            seed_hash = content_hash(version_document(spec))
            if seed_hash in known:
                continue
            document = spec
            if spec.effective_from <= today:
                # A version in force (or in the past) is never edited: the change takes effect tomorrow.
                if spec.effective_to is not None and spec.effective_to < tomorrow:
                    log.warning("a changed past version was not loaded", extra={"program": entry.code})
                    continue
                document = spec.model_copy(update={"effective_from": tomorrow})
                summary.versions_moved += 1
            live = [v for v in versions if v.superseded_at is None]
            await repo.supersede_versions([v.id for v in live if v.effective_from >= document.effective_from], now)
            number = max((v.version for v in versions), default=0) + 1
            versions.append(_add_version(repo, entry.code, number, document, seed_hash, now))
            await repo.session.flush()
            known.add(seed_hash)
            summary.versions_added += 1
    if summary.changed:
        await repo.bump_catalogue_revision(now)
    return summary


def _add_version(
    repo: Repository, code: str, number: int, spec: VersionSpec, seed_hash: str, now: dt.datetime
) -> RuleVersionRow:
    document = version_document(spec)
    row = RuleVersionRow(
        program_code=code,
        version=number,
        effective_from=spec.effective_from,
        effective_to=spec.effective_to,
        document=document,
        content_hash=content_hash(document),
        seed_hash=seed_hash,
        origin="seed",
        created_by="seed",
        created_at=now,
    )
    repo.session.add(row)
    return row


async def _seed_medians(repo: Repository, files: CatalogueFiles, today: dt.date, summary: SeedSummary) -> None:
    existing = {(r.year, r.household_size): r for r in await repo.median_rows()}
    for year in files.median_years:
        for size, amount in year.amounts.items():
            row = existing.get((year.year, size))
            if row is None:
                repo.session.add(
                    MedianIncomeRow(
                        year=year.year,
                        household_size=size,
                        amount=amount,
                        effective_from=year.effective_from,
                        source=year.source,
                    )
                )
                summary.median_rows_added += 1
            elif row.amount != amount or row.effective_from != year.effective_from:
                if row.effective_from > today and year.effective_from > today:
                    row.amount, row.effective_from, row.source = amount, year.effective_from, year.source
                    summary.median_rows_added += 1
                else:
                    log.warning("a median income figure in force was not changed", extra={"year": year.year})
                    summary.median_rows_kept += 1
