"""What an operator watches of proactive screening (its own module: the evaluation service and the screening runs
both report to it, and neither imports the other for it)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.eligibility.models import ScreeningRow


class ScreeningMetrics:
    """What an operator watches of proactive screening: runs by how they ended, how long they take, what they find."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter(
            "onestop_eligibility_screenings", "Screening runs by how they ended", ["status"], registry=registry
        )
        self.runs.labels(status="completed")
        self.runs.labels(status="failed")
        self.duration = Histogram(
            "onestop_eligibility_screening_duration_seconds", "How long a screening run takes", registry=registry,
            buckets=(0.5, 1, 5, 15, 60, 300, 900, 3600),
        )  # fmt: skip
        self.opportunities = Counter(
            "onestop_eligibility_opportunities", "Opportunities screening found and told", registry=registry
        )

    def finished(self, row: ScreeningRow) -> None:
        self.runs.labels(status=row.status).inc()
        self.duration.observe((row.duration_ms or 0) / 1000)
        self.opportunities.inc(row.opportunities)

    def failed(self) -> None:
        self.runs.labels(status="failed").inc()
