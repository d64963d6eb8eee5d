"""What an operator set for ``onestop run``: the ``ONESTOP_<SERVICE>_<SETTING>`` variables (the portal's too) in the
environment and in ``.env`` (the environment wins, as it does for pydantic-settings in the services).

The runner honours them, refuses the ones it must own (the NATS it starts, the ports it assigns, ...) with a clear
message, and names the variables that are no service's setting, so that nothing an operator wrote is silently
ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from onestop.registry import PORTAL, SERVICES, PortalEntry, ServiceEntry

PREFIX = "ONESTOP_"


@dataclass(frozen=True)
class OperatorSetting:
    variable: str
    service: str
    field: str
    value: str
    origin: str  # "the environment" or ".env (<path>)"


@dataclass(frozen=True)
class OperatorEnvironment:
    settings: tuple[OperatorSetting, ...]
    # ONESTOP_ variables that are no service's setting (a typo, or a setting that does not exist).
    unknown: tuple[tuple[str, str], ...]
    # Every ONESTOP_ variable with its value, to hand the services (the .env file's as well).
    variables: Mapping[str, str]

    def for_service(self, service: str) -> dict[str, OperatorSetting]:
        return {s.field: s for s in self.settings if s.service == service}


def read_operator_environment(env_file: Path | None, environ: Mapping[str, str] | None = None) -> OperatorEnvironment:
    environ = os.environ if environ is None else environ
    found: dict[str, tuple[str, str]] = {}
    if env_file is not None and env_file.is_file():
        for key, value in dotenv_values(env_file).items():
            if key.upper().startswith(PREFIX) and value is not None:
                found[key.upper()] = (value, f".env ({env_file})")
    for key, value in environ.items():
        if key.upper().startswith(PREFIX):
            found[key.upper()] = (value, "the environment")
    settings: list[OperatorSetting] = []
    unknown: list[tuple[str, str]] = []
    # The portal's settings too: it has no database, but an operator sets its identity provider, cookies, ...
    entries: tuple[ServiceEntry | PortalEntry, ...] = (*SERVICES, PORTAL)
    fields = {entry.name: set(entry.settings_class().model_fields) for entry in entries}
    for variable, (value, origin) in sorted(found.items()):
        entry = next((e for e in entries if variable.startswith(e.env_prefix)), None)
        name = variable.removeprefix(entry.env_prefix).lower() if entry else ""
        if entry is None or name not in fields[entry.name]:
            unknown.append((variable, origin))
            continue
        settings.append(OperatorSetting(variable, entry.name, name, value, origin))
    return OperatorEnvironment(tuple(settings), tuple(unknown), {k: v for k, (v, _) in found.items()})
