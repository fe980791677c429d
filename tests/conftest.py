"""Shared fixtures. Real servers are started once per session by the plugins below."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.servers.litellm",
    "tests.servers.litellm_logged",
    "tests.servers.prometheus",
    "tests.servers.misbehaving",
    "tests.servers.voila",
]

REPO = Path(__file__).resolve().parent.parent


def _shared_dir() -> Path:
    for candidate in (REPO.parent / "shared", REPO / "shared"):
        if (candidate / "fixtures").is_dir():
            return candidate
    raise FileNotFoundError("shared/fixtures not found beside the repository")


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """`../shared/fixtures`: responses captured from the real servers, for parser tests."""
    return _shared_dir() / "fixtures"


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the servers started by fixtures write their logs."""
    return tmp_path_factory.mktemp("server-logs")
