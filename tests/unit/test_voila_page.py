"""The page's view in a kernel Voilà preheated: the kernel waits for its page's request, which
Voilà sends over a websocket, and reads the URL's query string from it. Tested against a real
websocket server standing in for Voilà's `voila/query/<kernel id>` endpoint, with Voilà's own
`wait_for_request`."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest
import websockets

from aidash_lib.ui import voila_page
from aidash_lib.ui.voila_page import page_query_string, preheated, request_info_url
from tests.servers.process import free_port


@pytest.fixture(autouse=True)
def not_waited_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(voila_page, "_waited", False)


def test_preheated_only_when_voila_says_so() -> None:
    assert preheated({"VOILA_PREHEAT": "True"})
    assert not preheated({"VOILA_PREHEAT": "False"})
    assert not preheated({})


@pytest.mark.parametrize(("ip", "url"), [
    (None, "ws://127.0.0.1:8866/voila/query"),
    ("127.0.0.1", "ws://127.0.0.1:8866/voila/query"),
    ("0.0.0.0", "ws://127.0.0.1:8866/voila/query"),
    ("::", "ws://[::1]:8866/voila/query"),
    ("::1", "ws://[::1]:8866/voila/query"),
    ("fe80::1", "ws://[fe80::1]:8866/voila/query"),
    ("dash.example.org", "ws://dash.example.org:8866/voila/query"),
])
def test_the_request_info_address_is_reachable(ip: str | None, url: str) -> None:
    env = {} if ip is None else {"VOILA_APP_IP": ip}
    assert request_info_url(env) == url


def test_the_base_url_and_port_are_kept() -> None:
    env = {"VOILA_APP_PORT": "9001", "VOILA_SERVER_URL": "/dash/"}
    assert request_info_url(env) == "ws://127.0.0.1:9001/dash/voila/query"
    env["VOILA_WS_BASE_URL"] = "/ws/"
    assert request_info_url(env) == "ws://127.0.0.1:9001/ws/voila/query"


def test_a_plain_kernel_never_waits() -> None:
    def wait(url: str) -> None:
        raise AssertionError("waited")

    assert page_query_string({"QUERY_STRING": "range=6h"}, wait) == "range=6h"
    assert page_query_string({}, wait) is None


def test_a_preheated_kernel_waits_once() -> None:
    calls: list[str] = []
    env = {"VOILA_PREHEAT": "True", "VOILA_APP_PORT": "9002"}

    def wait(url: str) -> None:
        calls.append(url)
        env["QUERY_STRING"] = "range=24h&model=gpt-4o-mini"

    assert page_query_string(env, wait) == "range=24h&model=gpt-4o-mini"
    assert page_query_string(env, wait) == "range=24h&model=gpt-4o-mini"
    assert calls == ["ws://127.0.0.1:9002/voila/query"]


def test_without_word_from_voila_the_default_view_stays(caplog: pytest.LogCaptureFixture,
                                                        ) -> None:
    def wait(url: str) -> None:
        raise OSError("connection refused")

    assert page_query_string({"VOILA_PREHEAT": "True"}, wait) is None
    assert "keeps the default view" in caplog.text


@pytest.fixture
def request_info_server() -> Iterator[tuple[int, list[str]]]:
    """A websocket server that answers `/voila/query/<kernel id>` as Voilà does: with the
    request's variables as JSON, once the page is requested (here: at once)."""
    port = free_port()
    paths: list[str] = []
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop: asyncio.Future[None] = loop.create_future()

    async def answer(websocket: websockets.WebSocketServerProtocol, *args: object) -> None:
        path = getattr(getattr(websocket, "request", None), "path", None) or (
            args[0] if args else "")
        paths.append(str(path))
        await websocket.send(json.dumps({"QUERY_STRING": "range=6h&provider=openai"}))

    async def serve() -> None:
        async with websockets.serve(answer, "127.0.0.1", port):
            ready.set()
            await stop

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield port, paths
    finally:
        loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(10)
        loop.close()


def test_voilas_own_wait_reads_the_request(
    request_info_server: tuple[int, list[str]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, paths = request_info_server
    monkeypatch.setenv("VOILA_PREHEAT", "True")
    monkeypatch.setenv("VOILA_APP_IP", "0.0.0.0")
    monkeypatch.setenv("VOILA_APP_PORT", str(port))
    monkeypatch.setenv("VOILA_KERNEL_ID", "k-123")
    monkeypatch.delenv("QUERY_STRING", raising=False)
    assert page_query_string() == "range=6h&provider=openai"
    assert paths == ["/voila/query/k-123"]
