"""The request inspector's table rows as one widget: one model, one message per change.

Fifty rows of ipywidgets (a box, a button and an HTML cell each, with their layouts and
styles) were half of the dashboard's models, and a live table shifts every row at each new
request: fifty messages a second under steady traffic. Here the rows are one HTML string,
drawn by a few lines of JavaScript (anywidget), and a click anywhere on a row sends its call
id back to the kernel, which opens the detail.

Markup (stable, for the browser tests): each row is a `div.aidash-inspector-row` with
`data-call-id`, holding `span.aidash-inspector-open` and the cells (`row_html`); the open
request's row has the class `aidash-inspector-selected`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anywidget
import traitlets

from aidash_lib.ui.base import esc

_ESM = """
function render({ model, el }) {
  el.classList.add("aidash-inspector-rows");
  const draw = () => { el.innerHTML = model.get("html"); };
  model.on("change:html", draw);
  el.addEventListener("click", (event) => {
    const row = event.target.closest(".aidash-inspector-row[data-call-id]");
    if (row && !event.target.closest("a")) model.send({ open: row.dataset.callId });
  });
  draw();
}
export default { render };
"""


@dataclass(frozen=True)
class ShownRow:
    """A request shown in the table: its call id, when it started, and its cells' markup."""

    call_id: str
    started_s: float | None
    cells_html: str


class RequestRows(anywidget.AnyWidget):
    """Rows of requests; `on_open(callback)` is called with a row's `ShownRow` when a person
    clicks it (or `open_row(call_id)` is called, as the message of a click does)."""

    _esm = _ESM
    html = traitlets.Unicode("").tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rows: tuple[ShownRow, ...] = ()
        self.selected: str | None = None
        self._on_open: list[Callable[[ShownRow], None]] = []
        self.on_msg(self._message)

    def show(self, rows: Sequence[ShownRow], selected: str | None = None) -> None:
        """Show these rows (newest first), `selected` marked; only a change is sent."""
        self.rows, self.selected = tuple(rows), selected
        html = "".join(
            f'<div class="aidash-inspector-row'
            f'{" aidash-inspector-selected" if row.call_id == selected else ""}" '
            f'data-call-id="{esc(row.call_id)}" title="details of this request">'
            f'<span class="aidash-inspector-open">▸</span>{row.cells_html}</div>'
            for row in self.rows
        )
        if html != self.html:
            self.html = html

    def select(self, call_id: str | None) -> None:
        """Mark the row of `call_id` (None: none) as the open one."""
        if call_id != self.selected:
            self.show(self.rows, call_id)

    def on_open(self, callback: Callable[[ShownRow], None]) -> None:
        self._on_open.append(callback)

    def open_row(self, call_id: str) -> None:
        """What a click on the row of `call_id` does (a row no longer shown: nothing)."""
        row = next((r for r in self.rows if r.call_id == call_id), None)
        if row is not None:
            for callback in self._on_open:
                callback(row)

    def _message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and isinstance(content.get("open"), str):
            self.open_row(content["open"])
