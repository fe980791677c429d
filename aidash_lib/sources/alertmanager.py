"""Alertmanager's v2 API: readiness and the alerts it holds, as immutable `Alert` values.

This module stays free of pandas: a panel listing alerts needs none, and the recorder polls it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from aidash_lib.sources.base import (
    Fault,
    FaultKind,
    PrometheusStyleServer,
    Reading,
    http_get_json,
    malformed,
)


@dataclass(frozen=True)
class Alert:
    """One alert as Alertmanager holds it.

    `state` is Alertmanager's: `active`, `suppressed` (silenced or inhibited) or `unprocessed`.
    `starts_at` and `ends_at` are epoch seconds; for a firing alert `ends_at` is when
    Alertmanager will consider it resolved unless Prometheus sends it again. `labels` and
    `annotations` are read-only mappings; `silenced_by` holds silence ids, `inhibited_by` the
    fingerprints of the alerts that inhibit this one.
    """

    name: str
    state: str
    severity: str | None
    labels: Mapping[str, str] = field(hash=False)
    summary: str | None
    description: str | None
    starts_at: float
    ends_at: float | None
    fingerprint: str
    generator_url: str | None
    silenced_by: tuple[str, ...] = ()
    inhibited_by: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def silenced(self) -> bool:
        return bool(self.silenced_by)

    @property
    def inhibited(self) -> bool:
        return bool(self.inhibited_by)


class AlertmanagerSource(PrometheusStyleServer):
    """Reads one Alertmanager through `/-/ready` and `/api/v2/alerts`."""

    source = "alertmanager"


    async def active_alerts(
        self,
        include_silenced: bool = False,
        *,
        matchers: Sequence[str] = (),
    ) -> Reading[tuple[Alert, ...]]:
        """The alerts firing now, in Alertmanager's order.

        By default silenced and inhibited alerts are left out, as on Alertmanager's own page;
        `include_silenced=True` includes both. `matchers` are Alertmanager filter expressions
        (`severity="critical"`); one it cannot parse is a QUERY_ERROR with its message.
        """
        started = time.time()
        url = f"{self.base_url}/api/v2/alerts"
        flag = "true" if include_silenced else "false"
        params: list[tuple[str, str]] = [
            ("active", "true"), ("silenced", flag), ("inhibited", flag),
        ]
        params += [("filter", matcher) for matcher in matchers]
        body = await http_get_json(self.client, url, params=params, timeout=self.timeout)
        if isinstance(body, Fault):
            if body.kind is FaultKind.HTTP_STATUS and body.status_code == 400:
                body = Fault(FaultKind.QUERY_ERROR, body.message, url, body.status_code)
            return Reading.failure(self.source, body, started)
        if not isinstance(body, list):
            return Reading.failure(self.source, malformed(url, "alerts are not a list"), started)
        try:
            alerts = tuple(alert_from_json(item) for item in body)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            return Reading.failure(self.source, malformed(url, f"unexpected alert: {exc}"), started)
        return Reading.success(self.source, alerts, started)


def alert_from_json(item: Mapping[str, Any]) -> Alert:
    """One element of `/api/v2/alerts` as an `Alert`; raises on a shape it does not know."""
    labels = {str(k): str(v) for k, v in item["labels"].items()}
    annotations = {str(k): str(v) for k, v in (item.get("annotations") or {}).items()}
    status = item.get("status") or {}
    ends_at = item.get("endsAt")
    return Alert(
        name=labels.get("alertname", ""),
        state=str(status.get("state", "unprocessed")),
        severity=labels.get("severity"),
        labels=MappingProxyType(labels),
        summary=annotations.get("summary"),
        description=annotations.get("description"),
        starts_at=parse_time(item["startsAt"]),
        ends_at=parse_time(ends_at) if ends_at else None,
        fingerprint=str(item["fingerprint"]),
        generator_url=item.get("generatorURL") or None,
        silenced_by=tuple(str(s) for s in status.get("silencedBy") or ()),
        inhibited_by=tuple(str(s) for s in status.get("inhibitedBy") or ()),
        annotations=MappingProxyType(annotations),
    )


def parse_time(text: str) -> float:
    """An RFC 3339 time as Alertmanager writes it (`2026-11-29T06:52:50.045Z`) to epoch seconds.

    Fractions finer than microseconds (Go may write nanoseconds) are cut to microseconds.
    """
    if not isinstance(text, str):
        raise TypeError(f"time is not a string: {text!r}")
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}"
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
