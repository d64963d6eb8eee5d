"""Schemathesis (its command line, as a separate process) against a served app, with every response check that fits:
no server error, and each status code, content type, body and header as the app's OpenAPI document declares them."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Every check schemathesis has (`--checks all`) but one; those needing links between operations (use_after_free,
# ensure_resource_availability) only act in the stateful phase, which these runs leave out.
EXCLUDED_CHECKS = (
    # pydantic reads input in lax mode, the mode FastAPI validates in: a number where the document says a date, a
    # date-time or a boolean is converted (0 -> 1970-01-01, 0 -> false) rather than refused, so "schema-violating
    # request accepted" is that conversion, in every service, not a fault of one route.
    "negative_data_rejection",
)

CONFIG = """
[generation]
# The same requests on every run (hypothesis' derandomize): a failure here fails every time.
deterministic = true

[checks.positive_data_acceptance]
# A request the schema allows may still break a domain rule the schema cannot express (an unknown fact, a rule
# version dated in the past): that is answered 422, like any other invalid input.
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[warnings]
# A token that opens none of the operations given to it would leave them tested only up to authorization.
fail-on = ["missing_auth", "unmatched_filter", "base_url_mismatch"]
"""


@dataclass
class SchemathesisResult:
    returncode: int
    output: str

    def assert_conformant(self, operations: int) -> None:
        """No failure, and each of the document's ``operations`` was tested."""
        assert self.returncode == 0, self.output[-8000:]
        tested = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", self.output)
        assert tested is not None, self.output[-8000:]
        assert tested.groups() == (str(operations),) * 3, self.output[-8000:]


ALL_PHASES = "examples,coverage,fuzzing"


def phases_for(database_url: str) -> str:
    """The phases run against a service on ``database_url``'s backend. All of them on SQLite; on PostgreSQL the
    documented examples and the coverage phase, whose boundary values (the largest integers, the longest and the
    oddest strings) are where one database takes what the other refuses. Fuzzing's random requests go through the
    same routes and domain code on either backend: on PostgreSQL they would take the suite a minute and more per
    service for what the SQLite run already tries."""
    return ALL_PHASES if database_url.startswith("sqlite") else "examples,coverage"


def operation_count(schema: Mapping[str, Any]) -> int:
    """How many operations an OpenAPI document has."""
    return sum(len(operations) for operations in schema["paths"].values())


async def run_schemathesis(
    base_url: str, *, tokens: Mapping[str, str], report_dir: Path, max_examples: int = 10, phases: str = ALL_PHASES
) -> SchemathesisResult:
    """Run ``st run`` against ``<base_url>/openapi.json``, every operation. ``tokens`` maps a path pattern (a regular
    expression) to the bearer token its operations are called with; the first that matches applies, and operations
    no pattern matches go without one. The config file, the reports and the output go to ``report_dir``."""
    report_dir.mkdir(parents=True, exist_ok=True)
    config = report_dir / "schemathesis.toml"
    sections = [
        f"[[operations]]\ninclude-path-regex = {json.dumps(pattern)}\n"
        f"headers = {{ Authorization = {json.dumps(f'Bearer {token}')} }}\n"
        for pattern, token in tokens.items()
    ]
    config.write_text(CONFIG + "\n" + "\n".join(sections))
    st = str(Path(sys.executable).parent / "st")
    args = [
        st, "--config-file", str(config), "run", f"{base_url}/openapi.json",
        "--checks", "all", "--exclude-checks", ",".join(EXCLUDED_CHECKS),
        "--phases", phases, "--max-examples", str(max_examples), "--workers", "1",
        "--request-timeout", "10", "--suppress-health-check", "all", "--no-color", "--report-dir", str(report_dir),
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    output = out.decode(errors="replace")
    (report_dir / "output.txt").write_text(output)
    return SchemathesisResult(process.returncode or 0, output)
