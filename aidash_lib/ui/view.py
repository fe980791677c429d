"""What every panel follows: the time range and the filters chosen on the page.

Panels are ipywidgets containers with one coroutine, `refresh(view)`, that reads the store for
that view and updates the widgets (`Panel` protocol). The dashboard owns one `DashboardView`;
the range picker, the filters and the page's URL (`?range=1h&model=gpt-4o-mini&provider=openai`,
`&deployment=ID` to open one deployment's detail)
change it, and every panel is refreshed with the new one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

#: The ranges the picker offers, by their URL name, in seconds.
RANGES_S: dict[str, int] = {
    "15m": 15 * 60, "1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600, "7d": 7 * 86400,
}
DEFAULT_RANGE = "1h"


@dataclass(frozen=True)
class DashboardView:
    """A time range ending now (or at `end_s`), and optional model-group / provider filters."""

    range_name: str = DEFAULT_RANGE
    model_group: str | None = None
    provider: str | None = None
    end_s: float | None = None  # None: now (live)
    deployment: str | None = None  # a deployment to open in detail (links from the inspector)

    def __post_init__(self) -> None:
        if self.range_name not in RANGES_S:
            raise ValueError(f"range {self.range_name!r} is not one of {', '.join(RANGES_S)}")

    @property
    def range_s(self) -> int:
        return RANGES_S[self.range_name]

    def window(self, now_s: float | None = None) -> tuple[float, float]:
        """(start, end) in epoch seconds."""
        end = self.end_s if self.end_s is not None else (now_s or time.time())
        return end - self.range_s, end

    def with_(self, **changes: object) -> DashboardView:
        return replace(self, **changes)

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> DashboardView:
        """The view a shared link asks for; unknown or bad values fall back to the defaults."""
        range_name = query.get("range", DEFAULT_RANGE)
        if range_name not in RANGES_S:
            range_name = DEFAULT_RANGE
        return cls(
            range_name=range_name,
            model_group=query.get("model") or None,
            provider=query.get("provider") or None,
            deployment=query.get("deployment") or None,
        )

    def to_query(self) -> dict[str, str]:
        query = {"range": self.range_name}
        if self.model_group:
            query["model"] = self.model_group
        if self.provider:
            query["provider"] = self.provider
        if self.deployment:
            query["deployment"] = self.deployment
        return query


@runtime_checkable
class Panel(Protocol):
    """A dashboard panel: a widget that refreshes itself from the store for a view."""

    async def refresh(self, view: DashboardView) -> None: ...
