"""`aidash serve`: Voilà on the dashboard notebook, with the settings that keep it safe.

- loopback by default; a token whenever it listens on anything else;
- kernels shut down when a page closes (Voilà 0.5's beacon needs XSRF checks off, which is
  why a non-loopback server must have a token) and idle kernels culled;
- the port is the one asked for, never silently another (`port_retries=0`).
"""

from __future__ import annotations

import ipaddress
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
DASHBOARD_NOTEBOOK = NOTEBOOKS / "dashboard.ipynb"
DEFAULT_PORT = 8866
CULL_IDLE_S = 600
CULL_INTERVAL_S = 60


@dataclass(frozen=True)
class VoilaLaunch:
    """The command that serves the dashboard, and the URL a person opens."""

    argv: tuple[str, ...]
    url: str
    token: str | None

    def __repr__(self) -> str:  # the token is a secret: never in logs
        return f"VoilaLaunch(url={self.url_without_token!r})"

    @property
    def url_without_token(self) -> str:
        return self.url.split("?", 1)[0]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def voila_launch(
    notebook: Path = DASHBOARD_NOTEBOOK,
    *,
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    token: str | None = None,
    python: str = sys.executable,
    extra: Sequence[str] = (),
) -> VoilaLaunch:
    """The Voilà command line for the dashboard at the server's root URL."""
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    argv = [
        python, "-m", "voila", str(notebook), "--no-browser",
        f"--port={port}", f"--Voila.ip={host}", "--Voila.port_retries=0",
        "--Voila.tornado_settings={'disable_check_xsrf': True}",
        f"--MappingKernelManager.cull_idle_timeout={CULL_IDLE_S}",
        f"--MappingKernelManager.cull_interval={CULL_INTERVAL_S}",
        "--show_tracebacks=False",
    ]
    if token:
        argv.append(f"--token={token}")
    argv.extend(extra)
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}/" + (f"?token={token}" if token else "")
    return VoilaLaunch(tuple(argv), url, token)
