"""The shared reading and HTTP helpers: faults instead of exceptions, the server's own words."""

from __future__ import annotations

import json
import math

import httpx

from aidash_lib.sources.base import (
    Fault,
    FaultKind,
    Reading,
    http_get,
    http_get_json,
    server_message,
)


def client_for(handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_connect_error_and_timeout_become_faults() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with client_for(refuse) as client:
        fault = await http_get(client, "http://127.0.0.1:9/x")
    assert fault == Fault(FaultKind.UNREACHABLE, "connection refused", url="http://127.0.0.1:9/x")
    async with client_for(slow) as client:
        fault = await http_get(client, "http://127.0.0.1:9/x")
    assert isinstance(fault, Fault) and fault.kind is FaultKind.TIMEOUT


async def test_error_status_carries_the_servers_message() -> None:
    body = {"error": {"message": "/spend/logs ErrorDatabase not connected", "code": "500"}}

    async with client_for(lambda r: httpx.Response(500, json=body)) as client:
        fault = await http_get(client, "http://gw/spend/logs")
    assert fault.kind is FaultKind.HTTP_STATUS
    assert fault.status_code == 500
    assert fault.message == "/spend/logs ErrorDatabase not connected"
    assert str(fault) == (
        "http_status (http://gw/spend/logs): HTTP 500: /spend/logs ErrorDatabase not connected"
    )


def test_server_message_shapes() -> None:
    request = httpx.Request("GET", "http://x")
    assert server_message(httpx.Response(400, json="bad matcher format: foo", request=request)) \
        == "bad matcher format: foo"
    assert server_message(httpx.Response(500, json={"detail": {"error": "No db connected"}},
                                         request=request)) == "No db connected"
    assert server_message(httpx.Response(500, text="Internal\n  Server Error", request=request)) \
        == "Internal Server Error"
    assert server_message(httpx.Response(502, text="", request=request)) == "Bad Gateway"
    assert len(server_message(httpx.Response(500, text="x" * 1000, request=request))) == 300


async def test_malformed_json_is_a_fault() -> None:
    async with client_for(lambda r: httpx.Response(200, text="{not json")) as client:
        fault = await http_get_json(client, "http://gw/v1/models")
    assert fault.kind is FaultKind.MALFORMED
    assert "not JSON" in fault.message


def test_readings_serialise_to_plain_json() -> None:
    ok = Reading.success("gpu", {"temperature_c": math.nan, "kind": FaultKind.TIMEOUT})
    bad = Reading.failure("gateway", Fault(FaultKind.UNREACHABLE, "connection refused"))
    assert ok.ok and not bad.ok
    text = json.dumps([ok.to_dict(), bad.to_dict()], allow_nan=False)
    decoded = json.loads(text)
    assert decoded[0]["value"] == {"temperature_c": None, "kind": "timeout"}
    assert decoded[1]["fault"]["kind"] == "unreachable"
    assert decoded[1]["ok"] is False
    assert bad.taken_at > 0
