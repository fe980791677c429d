"""LiteLLM logging payloads and spend-log rows -> RequestRecord, on captured fixtures."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from aidash_lib.request_records import (
    HEALTH_CHECK_ALIAS,
    hash_key_alias,
    record_from_callback_kwargs,
    record_from_logging_object,
    record_from_spend_log,
    records_from_spend_logs,
    router_metadata,
    short_error_message,
)
from aidash_lib.sources.gateway import SpendLogEntry
from aidash_lib.store.schema import RequestRecord


@pytest.fixture(scope="module")
def litellm_dir(shared_fixtures: Path) -> Path:
    return shared_fixtures / "litellm"


def _slo(litellm_dir: Path, name: str) -> dict[str, Any]:
    return json.loads((litellm_dir / f"standard_logging_object{name}.json").read_text())


def _kwargs(slo: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    """Callback kwargs as LiteLLM passes them, with the secrets the raw kwargs really hold."""
    return {
        "standard_logging_object": slo,
        "litellm_call_id": slo["litellm_call_id"],
        "api_key": "sk-fake-openai-key",
        "messages": slo.get("messages"),
        "litellm_params": {
            "api_key": "sk-fake-openai-key",
            "metadata": {"user_api_key": "sk-test-master-aidash", "headers": {"x": "y"},
                         **metadata},
        },
    }


def _all_text(record: RequestRecord) -> str:
    return " ".join(str(v) for v in dataclasses.astuple(record))


def test_success(litellm_dir: Path) -> None:
    slo = _slo(litellm_dir, "")
    record = record_from_callback_kwargs(_kwargs(
        slo, original_model_group="gpt-4o-mini", model_group="gpt-4o-mini",
        attempted_fallbacks=0, attempted_retries=0))
    assert record is not None
    assert record.call_id == "5b40fd8e-4c03-4960-b8d2-ee3afa36fde7"
    assert record.requested_group == "gpt-4o-mini"
    assert record.deployment_id == "gpt-4o-mini-b"
    assert (record.model, record.provider) == ("openai/gpt-4o-mini", "openai")
    assert record.api_base == "https://api.openai.com"  # from hidden_params
    assert record.status == "success"
    assert record.started_s == slo["startTime"] and record.ended_s == slo["endTime"]
    assert record.latency_s == pytest.approx(slo["endTime"] - slo["startTime"])
    assert record.ttft_s is None  # not a stream
    assert (record.prompt_tokens, record.completion_tokens) == (10, 20)
    assert record.cost_usd == pytest.approx(1.35e-05)
    assert record.error_class is record.error_message is record.normalized_error is None
    assert (record.attempted_fallbacks, record.attempted_retries) == (0, 0)
    assert record.cache_hit is None
    assert record.stream is False
    assert record.call_type == "acompletion"
    assert record.key_alias_hash is None  # the master key has no alias
    assert record.is_health_check is False
    assert record.source == "logger"


def test_latency_includes_the_proxy_queue_time_as_the_gateway_histogram_does(
    litellm_dir: Path,
) -> None:
    slo = _slo(litellm_dir, "")
    record = record_from_callback_kwargs(_kwargs(slo, queue_time_seconds=0.03))
    assert record is not None
    assert record.latency_s == pytest.approx(slo["endTime"] - slo["startTime"] + 0.03)
    assert record.started_s == slo["startTime"]


def test_stream_has_time_to_first_token(litellm_dir: Path) -> None:
    slo = _slo(litellm_dir, "_stream")
    record = record_from_logging_object(slo)
    assert record.stream is True
    assert record.ttft_s == pytest.approx(slo["completionStartTime"] - slo["startTime"])
    assert record.latency_s == pytest.approx(slo["endTime"] - slo["startTime"])
    assert record.cache_hit is False
    assert (record.prompt_tokens, record.completion_tokens) == (10, 7)


def test_stream_without_a_timed_first_chunk_has_no_ttft(litellm_dir: Path) -> None:
    slo = _slo(litellm_dir, "_stream")
    slo["completionStartTime"] = slo["endTime"]  # what LiteLLM's mocks report
    assert record_from_logging_object(slo).ttft_s is None


def test_connection_failure(litellm_dir: Path) -> None:
    record = record_from_logging_object(_slo(litellm_dir, "_failure"))
    assert record.status == "failure"
    assert record.requested_group == "llama3-local"
    assert record.deployment_id == "llama3-local-1"
    assert record.provider == "ollama"
    assert record.api_base == "http://127.0.0.1:9/api/generate"
    assert record.error_class == "APIConnectionError"
    assert record.error_code == "500"
    assert record.normalized_error == "500_PROVIDER_CONNECTION_ERROR"
    assert record.error_message is not None
    assert record.error_message.startswith("litellm.APIConnectionError: OllamaException")
    assert "0x7f" not in record.error_message  # object addresses would split one error in many
    assert "Traceback" not in record.error_message and "\n" not in record.error_message
    assert (record.prompt_tokens, record.completion_tokens, record.cost_usd) == (0, 0, 0.0)


def test_rate_limit_failure(litellm_dir: Path) -> None:
    record = record_from_logging_object(_slo(litellm_dir, "_failure_ratelimit"))
    assert (record.error_class, record.error_code) == ("RateLimitError", "429")
    assert record.normalized_error == "429_RATE_LIMIT_EXCEEDED"
    assert record.error_message == "litellm.RateLimitError: this is a mock rate limit error"
    assert record.requested_group == "flaky-model"


def test_fallback_attempt_keeps_the_group_the_client_asked_for(litellm_dir: Path) -> None:
    """The success of a fallback: its payload names the fallback's group (gpt-4o-mini); the
    router's metadata keeps the requested one and counts the fallback."""
    failed = _slo(litellm_dir, "_failure")
    served = _slo(litellm_dir, "")
    served["litellm_call_id"] = failed["litellm_call_id"]
    served["hidden_params"]["additional_headers"]["x-litellm-attempted-fallbacks"] = 1
    first = record_from_callback_kwargs(_kwargs(
        failed, original_model_group="llama3-local", model_group="llama3-local",
        attempted_fallbacks="0"))
    second = record_from_callback_kwargs(_kwargs(
        served, original_model_group="llama3-local", model_group="gpt-4o-mini",
        attempted_fallbacks="1", attempted_retries="0"))
    assert first is not None and second is not None
    assert first.call_id == second.call_id
    assert first.requested_group == second.requested_group == "llama3-local"
    assert (first.deployment_id, second.deployment_id) == ("llama3-local-1", "gpt-4o-mini-b")
    assert (first.attempted_fallbacks, second.attempted_fallbacks) == (0, 1)
    assert (first.status, second.status) == ("failure", "success")


def test_fallback_count_from_response_headers_without_router_metadata(litellm_dir: Path) -> None:
    slo = _slo(litellm_dir, "")
    slo["hidden_params"]["additional_headers"].update(
        {"x-litellm-attempted-fallbacks": "2", "x-litellm-attempted-retries": 3})
    record = record_from_logging_object(slo)
    assert (record.attempted_fallbacks, record.attempted_retries) == (2, 3)
    assert record.requested_group == "gpt-4o-mini"  # no router metadata: the served group


def test_health_check_call(litellm_dir: Path) -> None:
    record = record_from_logging_object(_slo(litellm_dir, "_health_check"))
    assert record.is_health_check is True
    assert record.requested_group is None and record.deployment_id is None
    assert record.model == "gpt-4o"
    assert record.key_alias_hash == hash_key_alias(HEALTH_CHECK_ALIAS)


def test_health_check_recognised_by_tag_alone(litellm_dir: Path) -> None:
    slo = _slo(litellm_dir, "_health_check")
    slo["metadata"] = {}
    assert record_from_logging_object(slo).is_health_check is True


def test_proxy_level_error(litellm_dir: Path) -> None:
    record = record_from_logging_object(_slo(litellm_dir, "_proxy_error"))
    assert record.status == "failure"
    assert record.error_class == "ProxyModelNotFoundError"
    assert record.normalized_error == "400_INVALID_REQUEST"
    assert record.requested_group == "no-such-model"  # what the client asked for
    assert record.deployment_id is None and record.provider is None
    assert record.error_message is not None and "Invalid model name" in record.error_message


@pytest.mark.parametrize("name", ["", "_stream", "_failure", "_failure_ratelimit",
                                  "_health_check", "_proxy_error"])
def test_no_prompt_response_or_key_is_copied(litellm_dir: Path, name: str) -> None:
    slo = _slo(litellm_dir, name)
    record = record_from_callback_kwargs(_kwargs(slo, original_model_group="g"))
    assert record is not None
    text = _all_text(record)
    for secret in ("sk-fake-openai-key", "sk-test-master-aidash", "ping ", "hi from deployment",
                   "python-httpx", "dashboard-test-user", "fixture-run"):
        assert secret not in text


def test_error_message_is_scrubbed_and_short() -> None:
    text = ("AuthenticationError: Incorrect API key provided: sk-proj-abcdef123456. stack trace: "
            "Traceback (most recent call last):\n  File x")
    assert short_error_message(text) == "AuthenticationError: Incorrect API key provided: sk-…."
    assert short_error_message("line one\nTraceback (most recent call last):") == "line one"
    assert short_error_message(None) is None and short_error_message("  \n ") is None
    long = short_error_message("x" * 1000)
    assert long is not None and len(long) == 300 and long.endswith("…")


def test_api_base_loses_credentials_and_query(litellm_dir: Path) -> None:
    slo = _slo(litellm_dir, "")
    slo["api_base"] = "https://user:secret@example.com:8443/v1?key=sk-abcdef"
    assert record_from_logging_object(slo).api_base == "https://example.com:8443/v1"


def test_api_base_from_router_metadata_when_the_payload_has_none(litellm_dir: Path) -> None:
    slo = _slo(litellm_dir, "_stream")  # streams carry no api_base in hidden_params
    record = record_from_callback_kwargs(_kwargs(slo, api_base="http://127.0.0.1:9"))
    assert record is not None and record.api_base == "http://127.0.0.1:9"


def test_key_alias_hash_is_short_stable_and_not_the_alias() -> None:
    digest = hash_key_alias("team-a-prod")
    assert digest == hash_key_alias("team-a-prod") != hash_key_alias("team-b-prod")
    assert digest is not None and len(digest) == 16 and "team" not in digest
    assert hash_key_alias(None) is None and hash_key_alias("") is None


def test_router_metadata_copies_only_what_records_need() -> None:
    kwargs = {"litellm_params": {
        "metadata": {"original_model_group": "a", "user_api_key": "sk-x", "headers": {}},
        "litellm_metadata": {"attempted_fallbacks": 2, "model_group": "b"},
    }}
    assert router_metadata(kwargs) == {
        "original_model_group": "a", "attempted_fallbacks": 2, "model_group": "b"}
    assert router_metadata({}) == {} and router_metadata({"litellm_params": "x"}) == {}


def test_no_logging_payload_gives_no_record() -> None:
    assert record_from_callback_kwargs({}) is None
    assert record_from_callback_kwargs({"standard_logging_object": None}) is None


def test_odd_payloads_never_raise(litellm_dir: Path) -> None:
    slo = _slo(litellm_dir, "_failure")
    odd = copy.deepcopy(slo)
    odd.update({"startTime": "soon", "endTime": None, "completionStartTime": float("nan"),
                "prompt_tokens": "many", "completion_tokens": -3, "response_cost": None,
                "metadata": "x", "hidden_params": None, "error_information": [],
                "stream": "yes", "status": None, "cache_hit": "no", "litellm_call_id": None})
    record = record_from_logging_object(odd)
    assert record.status == "failure"
    assert record.call_id == slo["id"]
    assert (record.prompt_tokens, record.completion_tokens, record.cost_usd) == (0, 0, 0.0)
    assert record.started_s == record.ended_s
    assert record.latency_s == pytest.approx(slo["response_time"])
    assert record.stream is False and record.cache_hit is None
    assert record_from_logging_object({}).call_id  # a generated id, never empty


def test_every_captured_callback_event_converts(litellm_dir: Path) -> None:
    """The fixture run's 104 events (flattened): each gives a record with its call id, and
    failures keep their error class."""
    lines = (litellm_dir / "callback_events_compact.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    for event in events:
        slo = {**event, "error_information": {
            "error_class": event["error_class"], "error_code": event["error_code"],
            "normalized_error": event["normalized_error"]},
            "metadata": {"user_api_key_alias": event["key_alias"]}}
        record = record_from_logging_object(slo)
        assert record.call_id == event["litellm_call_id"]
        assert record.status == event["status"]
        assert record.is_health_check == (event["key_alias"] == HEALTH_CHECK_ALIAS)
        if event["status"] == "failure":
            assert record.error_class == event["error_class"]
        else:
            assert record.error_class is None
            assert record.cost_usd == pytest.approx(event["response_cost"])


def test_spend_log_entry() -> None:
    entry = SpendLogEntry(
        request_id="chatcmpl-1", call_type="acompletion", model="openai/gpt-4o-mini",
        model_group="gpt-4o-mini", model_id="gpt-4o-mini-a", provider="openai",
        api_base="https://api.openai.com/v1", spend_usd=2e-5, prompt_tokens=12,
        completion_tokens=30, total_tokens=42, started_at=1000.0, ended_at=1000.5,
        duration_s=0.5, status="success", cache_hit=False, request_tags=("a",),
    )
    record = record_from_spend_log(entry)
    assert record == RequestRecord(
        call_id="chatcmpl-1", started_s=1000.0, ended_s=1000.5, requested_group="gpt-4o-mini",
        deployment_id="gpt-4o-mini-a", model="openai/gpt-4o-mini", provider="openai",
        api_base="https://api.openai.com/v1", status="success", latency_s=0.5,
        prompt_tokens=12, completion_tokens=30, cost_usd=2e-5, cache_hit=False,
        call_type="acompletion", source="spend_logs",
    )


def test_spend_log_entries_with_gaps() -> None:
    entries = [
        SpendLogEntry(request_id="r1", ended_at=50.0, status="failure",
                      request_tags=(HEALTH_CHECK_ALIAS,)),
        SpendLogEntry(request_id="r2", started_at=10.0, ended_at=12.0),
    ]
    first, second = records_from_spend_logs(entries)
    assert (first.started_s, first.ended_s, first.latency_s) == (50.0, 50.0, 0.0)
    assert first.status == "failure" and first.is_health_check is True
    assert second.status == "success" and second.latency_s == 2.0
    assert second.source == "spend_logs"
