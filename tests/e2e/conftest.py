"""The whole platform as separate processes (nats-server and the four services on free ports), started through the
same code path as `onestop run`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from onestop.registry import SERVICES
from onestop.runner import Platform, PlatformConfig, free_port


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    config = PlatformConfig(
        var_dir=tmp_path_factory.mktemp("var"),
        nats_port=free_port(),
        nats_http_port=free_port(),
        ports={s.name: free_port() for s in SERVICES},
        ready_timeout=90,
    )
    platform = Platform(config)
    platform.start()
    yield platform
    platform.stop()
