"""The page a dashboard kernel serves: the query string of its URL, also in a preheated kernel.

`aidash serve` keeps `dashboard.preheated_kernels` kernels that have already run the dashboard
notebook (Voilà's `--preheat_kernel`): imports, widgets and a first read of the store happen
before anyone opens the page, the kernel then follows the store while it waits, and a page is
served from one of them at once. Such a kernel
learns its page's URL only when the page is requested: Voilà sends the request's variables
(`QUERY_STRING`, ...) to the kernel over a websocket, which `voila.utils.wait_for_request`
waits for. In any other kernel (a plain Voilà kernel, JupyterLab, nbval) `QUERY_STRING` is
already in the environment, or absent, and nothing waits.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable, MutableMapping

log = logging.getLogger(__name__)

_waited = False


def preheated(environ: MutableMapping[str, str] | None = None) -> bool:
    """Whether this kernel was started by Voilà ahead of its page (`VOILA_PREHEAT=True`)."""
    env = os.environ if environ is None else environ
    return env.get("VOILA_PREHEAT", "False") == "True"


def request_info_url(environ: MutableMapping[str, str] | None = None) -> str:
    """The websocket on which Voilà sends a preheated kernel its page's request.

    Voilà builds it from the address it listens on; a wildcard address (`0.0.0.0`, `::`)
    is reached on loopback, and an IPv6 one needs brackets."""
    env = os.environ if environ is None else environ
    host = env.get("VOILA_APP_IP", "127.0.0.1") or "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address.is_unspecified:
        host = "127.0.0.1" if address.version == 4 else "::1"
        address = ipaddress.ip_address(host)
    if address is not None and address.version == 6:
        host = f"[{host}]"
    port = env.get("VOILA_APP_PORT", "8866")
    base = env.get("VOILA_WS_BASE_URL") or env.get("VOILA_SERVER_URL") or "/"
    protocol = env.get("VOILA_WS_PROTOCOL", "ws")
    return f"{protocol}://{host}:{port}{base}voila/query"


def page_query_string(
    environ: MutableMapping[str, str] | None = None,
    wait: Callable[[str], object] | None = None,
) -> str | None:
    """The query string of the page this kernel serves (`?range=1h&model=...` without `?`).

    In a preheated kernel the first call blocks until the page is requested (`wait`, default
    `voila.utils.wait_for_request`, puts the request's variables in `environ`); a kernel that
    cannot hear from Voilà keeps the default view, with a warning in the server's log."""
    global _waited
    env = os.environ if environ is None else environ
    if preheated(env) and not _waited:
        _waited = True
        if wait is None:
            from voila.utils import wait_for_request

            wait = wait_for_request
        try:
            wait(request_info_url(env))
        except Exception as exc:  # the page still shows, with the default view
            log.warning("no request info from Voilà (%s): the page keeps the default view", exc)
    return env.get("QUERY_STRING")
