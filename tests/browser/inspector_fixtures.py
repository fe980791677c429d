"""The request inspector served by Voilà over a real LiteLLM proxy with aidash's logger, and
what a test reads of it in the browser (used by `test_inspector_browser.py` and by
`benchmarks/inspector.py`).

The notebook is the one line an operator writes: `RequestInspector()` with the settings that
`aidash serve` hands its kernels (`AIDASH_CONFIG`), so it reads the gateway's store.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.servers.litellm_logged import Sent, send_chat
from tests.servers.voila import ARTIFACTS, wait_on_page

NOTEBOOK_CELLS = (
    "from aidash_lib.ui.inspector import RequestInspector",
    "RequestInspector()",
)

#: (kind, model asked for, stream): successes, the three kinds of fallback, an unknown model
#: and a stream, as in the logger's own integration test.
MIX: tuple[tuple[str, str, bool], ...] = (
    ("success", "gpt-4o-mini", False),
    ("success", "claude-haiku", False),
    ("connection_fallback", "llama3-local", False),
    ("ratelimit_fallback", "flaky-model", False),
    ("context_fallback", "small-context-model", False),
    ("unknown_model", "no-such-model", False),
    ("stream", "gpt-4o-mini", True),
)

#: What a row looks like to a person, read from the page.
ROWS_JS = """
() => [...document.querySelectorAll('.aidash-inspector-row')]
  .filter((r) => r.getClientRects().length > 0)
  .map((r) => {
    const c = r.querySelector('.aidash-inspector-cells');
    const cells = {};
    c.querySelectorAll('[data-key]').forEach((s) => {
      cells[s.dataset.key] = {text: s.innerText.trim(), value: s.dataset.value ?? null};
    });
    return {callId: c.dataset.callId, status: c.dataset.status, outcome: c.dataset.outcome,
            cells};
  })
"""

#: Records, in the page, when each call id first shows in the table (epoch ms).
WATCH_JS = """
() => {
  if (window.__aidashSeen) return;
  window.__aidashSeen = {};
  const note = () => {
    document.querySelectorAll('.aidash-inspector-cells[data-call-id]').forEach((c) => {
      const id = c.dataset.callId;
      if (!(id in window.__aidashSeen) && c.getClientRects().length > 0) {
        window.__aidashSeen[id] = Date.now();
      }
    });
  };
  new MutationObserver(note).observe(document.body,
    {subtree: true, childList: true, attributes: true, characterData: true});
  note();
}
"""


def write_notebook(folder: Path, name: str = "inspector.ipynb") -> Path:
    """The one-line inspector notebook."""
    cells = [
        {"cell_type": "code", "execution_count": None, "id": f"cell-{i}", "metadata": {},
         "outputs": [], "source": source}
        for i, source in enumerate(NOTEBOOK_CELLS)
    ]
    notebook = {
        "cells": cells, "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                    "name": "python3"}},
    }
    path = folder / name
    path.write_text(json.dumps(notebook, indent=1))
    return path


def send(client: httpx.Client, kind: str, model: str, stream: bool = False) -> Sent:
    """One chat completion of a kind of `MIX`."""
    return send_chat(client, kind, model, stream, marker="inspector test")


class InspectorPage:
    """The inspector on an open Voilà page, read and driven as a person would."""

    def __init__(self, page: Any) -> None:
        self.page = page

    @property
    def root(self) -> Any:
        return self.page.locator(".aidash-inspector").first

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        self.page.locator(".aidash-inspector.aidash-has-data").first.wait_for(
            state="attached", timeout=timeout_s * 1000)

    def rows(self) -> list[dict[str, Any]]:
        return self.page.evaluate(ROWS_JS)

    def call_ids(self) -> list[str]:
        return [r["callId"] for r in self.rows()]

    def counts(self) -> dict[str, str | None]:
        return self.page.eval_on_selector_all(
            ".aidash-inspector-counts td[data-key]",
            "tds => Object.fromEntries(tds.map(t => [t.dataset.key, t.dataset.value ?? null]))")

    def wait_until(self, predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
        return wait_on_page(self.page, predicate, timeout_s, what, every_ms=200,
                            state=lambda: f"rows: {self.call_ids()}")

    def wait_for_rows(self, expected: list[str], timeout_s: float = 30.0) -> None:
        """Wait until the table shows exactly `expected` (call ids, in order)."""
        self.wait_until(lambda: self.call_ids() == expected, timeout_s,
                        f"the rows {expected}")

    def choose(self, filter_name: str, label: str) -> None:
        """Pick an option of a filter dropdown by its label."""
        self.page.locator(f".aidash-inspector-filter-{filter_name} select").first.select_option(
            label=label)

    def type_into(self, filter_name: str, text: str) -> None:
        box = self.page.locator(f".aidash-inspector-filter-{filter_name} input").first
        box.fill(text)
        box.press("Enter")

    def open_detail(self, call_id: str) -> Any:
        row = self.page.locator(".aidash-inspector-row").filter(
            has=self.page.locator(f".aidash-inspector-cells[data-call-id='{call_id}']"))
        row.locator(".aidash-inspector-open").first.click()
        detail = self.page.locator(f".aidash-inspector-detail [data-call-id='{call_id}']").first
        detail.wait_for(state="visible", timeout=30_000)
        return self.page.locator(".aidash-inspector-detail").first

    def screenshot(self, name: str) -> Path:
        """A screenshot of the inspector alone, in `test-artifacts/NAME.png`."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.root.screenshot(path=str(path))
        return path

    def watch(self) -> None:
        """Start recording when each call id first shows (`seen()`)."""
        self.page.evaluate(WATCH_JS)

    def seen(self) -> dict[str, float]:
        """Call id -> epoch seconds when it first showed in the table."""
        return {k: v / 1000 for k, v in self.page.evaluate("() => window.__aidashSeen || {}")
                .items()}
