"""What every panel shares: a title, a loading state, its own error line, "updated HH:MM:SS",
a live loop of its own for use outside the dashboard, and the formatting helpers.

A panel (`PanelBase` subclass) implements `_update(view)`: read the store for that view and set
its widgets. `refresh(view)` wraps it: a failure shows on the panel's error line (the other
panels are not affected) and the next refresh clears it when the store answers again, so a
panel recovers by itself. Problems that leave the panel's data standing (the gateway is
unreachable, a source has a fault) are reported with `self.problem(text)` during `_update`.

Stable CSS classes (for the browser tests): the panel root `aidash-panel` plus its own
(`aidash-traffic`, ...); in its header (one HTML widget, `PanelBase.header`) `aidash-title`,
`aidash-updated`, `aidash-loading` (while loading) and `aidash-error` (while failing);
`aidash-has-data` on the root once a refresh succeeded, `aidash-has-error` while the error line
shows. Values a test may read are in HTML tables of class `aidash-values`, one cell per value
with `data-key` and `data-value` attributes. `aidash-hidden` hides a widget (see
`aidash_lib.ui.shared_models`: layouts are shared, so nothing is hidden through them).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import logging
import math
import re
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import ipywidgets as widgets

from aidash_lib.ui import shared_models as shared
from aidash_lib.ui.view import DashboardView

if TYPE_CHECKING:
    from aidash_lib.settings import Settings, Threshold
    from aidash_lib.store.history import History

log = logging.getLogger(__name__)

#: Styles of the panels; every panel carries them so that it looks right on its own too.
STYLE = """<style>
.aidash-hidden { display: none !important; }
.aidash-panel { contain: layout style; }
.aidash-chart { contain: layout style paint; }
.aidash-panel { border: 1px solid #d0d7de; border-radius: 6px; padding: 6px 10px;
  margin: 4px; background: #fff; }
.aidash-panel .aidash-title b { font-size: 15px; }
.aidash-panel-head { display: flex; justify-content: space-between; align-items: baseline;
  line-height: 24px; }
.aidash-panel-header .aidash-error { line-height: 20px; }
.aidash-updated, .aidash-loading { color: #57606a; font-size: 12px; }
.aidash-error { color: #b42318; font-weight: 600; }
.aidash-note { color: #57606a; font-size: 13px; }
.aidash-nogpu { font-size: 14px; color: #57606a; padding: 8px 0; }
table.aidash-table, table.aidash-values { border-collapse: collapse; font-size: 13px; }
table.aidash-table th, table.aidash-table td { padding: 2px 8px; border-bottom: 1px solid #eaeef2;
  text-align: left; white-space: nowrap; }
table.aidash-table td.num, table.aidash-table th.num { text-align: right; }
table.aidash-errors-table td[data-key="message"] { white-space: normal; min-width: 240px;
  max-width: 520px; }
table.aidash-values td { padding: 2px 14px 2px 0; }
table.aidash-values .aidash-key { color: #57606a; font-size: 11px; display: block; }
table.aidash-values .aidash-val { font-size: 18px; font-weight: 600; }
.aidash-ok { color: #1a7f37; }
.aidash-warn { color: #9a6700; background: #fff8c5; }
.aidash-critical { color: #b42318; background: #ffebe9; }
.aidash-muted { color: #8c959f; }
.aidash-legend { font-size: 12px; line-height: 1.5; }
.aidash-legend-item, .aidash-legend-threshold { display: inline-block; white-space: nowrap; }
.aidash-legend .aidash-swatch { display: inline-block; width: 10px; height: 10px;
  margin: 0 3px 0 8px; border-radius: 2px; }
.aidash-chip { display: inline-block; padding: 2px 8px; margin: 2px 6px 2px 0;
  border-radius: 10px; background: #f6f8fa; border: 1px solid #d0d7de; font-size: 13px; }
</style>"""

_SECRET_PATTERNS = (
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{4,}"), "sk-***"),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9_\-.=]{8,}"), r"\1***"),
    (re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access_token|sig)=)[^&\s]+"), r"\1***"),
    (re.compile(r"(://)[^/@\s:]+:[^/@\s]+@"), r"\1***@"),
)


@functools.lru_cache(maxsize=4096)
def mask_secrets(text: str) -> str:
    """`text` with anything that looks like a key, a bearer token or URL credentials masked.
    Remembered for the last few thousand texts: a refresh masks the same model names,
    providers and errors over and over (about a thousand calls)."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def esc(value: object) -> str:
    """Text for HTML, secrets masked."""
    return html.escape(mask_secrets(str(value)), quote=True)


# -- formatting ------------------------------------------------------------------------------


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def fmt_number(value: float | None, digits: int = 1) -> str:
    """A number with `digits` decimals below 100, none above; "–" when missing."""
    if _missing(value):
        return "–"
    assert value is not None
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def fmt_percent(value: float | None, digits: int = 1) -> str:
    return "–" if _missing(value) else f"{value:.{digits}f} %"


def fmt_seconds(value: float | None) -> str:
    """A duration: milliseconds under a second, seconds above."""
    if _missing(value):
        return "–"
    assert value is not None
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.2f} s"
    return f"{value / 60:.1f} min"


def fmt_bytes(value: float | None, suffix: str = "") -> str:
    """Bytes in binary units (KiB, MiB, ...)."""
    if _missing(value):
        return "–"
    assert value is not None
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            text = f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
            return text + suffix
        size /= 1024
    raise AssertionError("unreachable")


def fmt_usd(value: float | None) -> str:
    if _missing(value):
        return "–"
    assert value is not None
    return f"${value:.4f}" if abs(value) < 1 else f"${value:,.2f}"


def fmt_clock(epoch_s: float | None) -> str:
    """HH:MM:SS in the kernel's local time."""
    if epoch_s is None:
        return "–"
    return datetime.fromtimestamp(epoch_s).strftime("%H:%M:%S")


def fmt_when(epoch_s: float | None, now_s: float | None = None) -> str:
    """A time as a person reads it: HH:MM:SS today, with the date otherwise."""
    if epoch_s is None:
        return "–"
    now = time.time() if now_s is None else now_s
    when = datetime.fromtimestamp(epoch_s)
    if when.date() == datetime.fromtimestamp(now).date():
        return when.strftime("%H:%M:%S")
    return when.strftime("%Y-%m-%d %H:%M")


def fmt_ago(epoch_s: float | None, now_s: float | None = None) -> str:
    """How long ago, in the largest sensible unit."""
    if epoch_s is None:
        return "never"
    seconds = max(0.0, (time.time() if now_s is None else now_s) - epoch_s)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


def level(value: float | None, threshold: Threshold | None) -> str:
    """"ok", "warn" or "critical" against a threshold ("" when either is missing)."""
    if threshold is None or _missing(value):
        return ""
    assert value is not None
    if value >= threshold.critical:
        return "critical"
    if value >= threshold.warn:
        return "warn"
    return "ok"


# -- HTML ------------------------------------------------------------------------------------


class Cell:
    """A table cell: its text, an optional CSS class and `data-value` for tests to read."""

    __slots__ = ("css", "data", "text", "title")

    def __init__(self, text: object, *, css: str = "", data: object = None,
                 title: str | None = None) -> None:
        self.text = text
        self.css = css
        self.data = data
        self.title = title

    def render(self, tag: str = "td", key: str | None = None) -> str:
        attrs = f' class="{esc(self.css)}"' if self.css else ""
        if key is not None:
            attrs += f' data-key="{esc(key)}"'
        if self.data is not None:
            attrs += f' data-value="{esc(self.data)}"'
        if self.title:
            attrs += f' title="{esc(self.title)}"'
        return f"<{tag}{attrs}>{esc(self.text)}</{tag}>"


def html_table(
    columns: Sequence[str | tuple[str, str]],
    rows: Iterable[Sequence[object]],
    *,
    css: str = "aidash-table",
    row_keys: Sequence[str] | None = None,
    numeric: Iterable[int] = (),
) -> str:
    """An HTML table. Columns are names or (name, key); a cell is text or a `Cell`; numeric
    columns are right-aligned. Each row gets `data-row` from `row_keys`, each cell `data-key`
    from its column's key."""
    nums = set(numeric)
    keys = [c[1] if isinstance(c, tuple) else c for c in columns]
    names = [c[0] if isinstance(c, tuple) else c for c in columns]
    head = "".join(
        f'<th class="num">{esc(n)}</th>' if i in nums else f"<th>{esc(n)}</th>"
        for i, n in enumerate(names)
    )
    body = []
    for r, row in enumerate(rows):
        cells = []
        for i, value in enumerate(row):
            cell = value if isinstance(value, Cell) else Cell("–" if value is None else value)
            if i in nums:
                cell = Cell(cell.text, css=f"num {cell.css}".strip(), data=cell.data,
                            title=cell.title)
            cells.append(cell.render("td", keys[i]))
        attr = f' data-row="{esc(row_keys[r])}"' if row_keys is not None else ""
        body.append(f"<tr{attr}>{''.join(cells)}</tr>")
    return f'<table class="{esc(css)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}' \
           "</tbody></table>"


def values_table(values: Mapping[str, tuple[str, str, object] | tuple[str, str, object, str]]
                 ) -> str:
    """A row of headline values: key -> (label, text, raw value[, css class])."""
    cells = []
    for key, item in values.items():
        label, text, raw = item[0], item[1], item[2]
        css = item[3] if len(item) > 3 else ""  # type: ignore[misc]
        raw_attr = "" if raw is None else f' data-value="{esc(raw)}"'
        cells.append(
            f'<td data-key="{esc(key)}"{raw_attr}><span class="aidash-key">{esc(label)}</span>'
            f'<span class="aidash-val {esc(css)}">{esc(text)}</span></td>'
        )
    return f'<table class="aidash-values"><tr>{"".join(cells)}</tr></table>'


def note(text: str, css: str = "aidash-note") -> str:
    return f'<div class="{esc(css)}">{esc(text)}</div>'


# -- errors ----------------------------------------------------------------------------------


def describe_error(exc: BaseException, store_path: object = None) -> str:
    """One line an operator can act on, for a failed refresh."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "no such table" in text:
        where = f" at {store_path}" if store_path is not None else ""
        return (f"No data yet: the store{where} has no tables yet (is the recorder running? "
                "`aidash record`)")
    from aidash_lib.store.history import HistoryError
    from aidash_lib.store.sqlite import StoreError

    if isinstance(exc, StoreError | HistoryError):
        return mask_secrets(text)
    return mask_secrets(f"{type(exc).__name__}: {text}")


# -- the panel -------------------------------------------------------------------------------


_BACKGROUND: set[asyncio.Task[None]] = set()


def background(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run `coro` as a task on the running loop (the kernel's), keeping a reference until it
    ends; outside a running loop (a widget changed from plain code), nothing is run."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        coro.close()
        return None
    task = loop.create_task(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task


class PanelBase(widgets.VBox):
    """A dashboard panel (the `Panel` protocol of `aidash_lib.ui.view`): a widget that reads the
    store for a `DashboardView` in `refresh(view)`.

    `history` defaults to the store of `settings` (`open_history(settings.store_path)`),
    `settings` to `load_settings()`. On its own in a notebook: `await panel.refresh()` once,
    or `panel.start()` to refresh it every `settings.dashboard.refresh_s` seconds.
    """

    #: The root's CSS class (`aidash-traffic`, ...) and the title shown.
    css_class: ClassVar[str] = "aidash-panel"
    title: ClassVar[str] = ""
    #: Live ticks closer than this to the last refresh are skipped (a new view never is).
    min_refresh_s: ClassVar[float] = 0.0

    def __init__(
        self,
        history: History | None = None,
        settings: Settings | None = None,
        *,
        title: str | None = None,
    ) -> None:
        if settings is None:
            from aidash_lib.settings import load_settings

            settings = load_settings()
        if history is None:
            from aidash_lib.store.history import open_history

            history = open_history(settings.store_path)
        self.settings = settings
        self.history = history
        self.view = DashboardView(range_name=settings.dashboard.default_range)
        self.last_refresh_s: float | None = None
        self.last_error: str | None = None
        self.refreshes = 0
        self._problems: list[str] = []
        self._refreshed_view: DashboardView | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._title_text = title or self.title
        self._loading_shown = True
        #: The title, the loading state, "updated HH:MM:SS" and the error line, as one
        #: widget: a page builds a view per widget, and the dashboard has seven headers.
        self.header = shared.html(self._header_html(), "aidash-panel-header")
        #: The style sheet, hidden (it applies all the same); `embed()` drops it.
        self._style = shared.html(STYLE, shared.HIDDEN)
        self.body = shared.vbox()
        super().__init__([self._style, self.header, self.body], layout=shared.layout())
        self.add_class("aidash-panel")
        self.add_class(self.css_class)

    def embed(self) -> None:
        """Drop this panel's copy of `STYLE`: a page that holds many panels (the dashboard)
        carries one copy for all, as every copy makes the browser restyle the whole page.
        The copy's widget is closed: a page would still make a model of it."""
        self.children = [c for c in self.children if c is not self._style]
        self._style.close()

    def _header_html(self) -> str:
        parts = [f'<div class="aidash-panel-head"><span class="aidash-title">'
                 f"<b>{esc(self._title_text)}</b></span><span>"]
        if self._loading_shown:
            parts.append('<span class="aidash-loading">loading…</span> ')
        if self.last_refresh_s is not None:
            parts.append(f'<span class="aidash-updated">updated '
                         f"{fmt_clock(self.last_refresh_s)}</span>")
        parts.append("</span></div>")
        if self.last_error:
            parts.append(f'<div class="aidash-error">⚠ {esc(self.last_error)}</div>')
        return "".join(parts)

    def _show_header(self) -> None:
        text = self._header_html()
        if self.header.value != text:
            self.header.value = text

    # -- what subclasses implement ----------------------------------------------------------

    async def _update(self, view: DashboardView) -> None:
        """Read the store for `view` and update the widgets."""
        raise NotImplementedError

    def problem(self, text: str) -> None:
        """Report a problem on the error line for this refresh, keeping the data shown."""
        if text not in self._problems:
            self._problems.append(mask_secrets(text))

    # -- refreshing -------------------------------------------------------------------------

    async def refresh(self, view: DashboardView | None = None, *, live: bool = False) -> None:
        """Read the store for `view` (default: the last one) and update; never raises, except
        `CancelledError`. With `live=True` (a tick of a loop), a refresh sooner than
        `min_refresh_s` after the last one of the same view is skipped."""
        view = view or self.view
        if (
            live
            and self.min_refresh_s
            and view == self._refreshed_view
            and self.last_refresh_s is not None
            and time.time() - self.last_refresh_s < self.min_refresh_s
        ):
            return
        async with self._lock:
            new_view = view != self._refreshed_view
            self.view = view
            if new_view and not self._loading_shown:
                self._loading_shown = True
                self._show_header()
            self._problems = []
            try:
                await self._update(view)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                message = describe_error(exc, getattr(self.history, "path", None))
                log.debug("%s: refresh failed: %s", type(self).__name__, message, exc_info=exc)
                self._show_error(message)
            else:
                self._refreshed_view = view
                self._show_error("; ".join(self._problems) if self._problems else None)
                if "aidash-has-data" not in self._dom_classes:
                    self.add_class("aidash-has-data")
            finally:
                self.refreshes += 1
                self.last_refresh_s = time.time()
                self._loading_shown = False
                self._show_header()

    def _show_error(self, message: str | None) -> None:
        """Set the error line (shown with the header, at the end of the refresh)."""
        self.last_error = message
        if message:
            if "aidash-has-error" not in self._dom_classes:
                self.add_class("aidash-has-error")
        elif "aidash-has-error" in self._dom_classes:
            self.remove_class("aidash-has-error")

    # -- a live loop of its own (when used outside the dashboard) ----------------------------

    def start(self, interval_s: float | None = None, view: DashboardView | None = None,
              *, max_ticks: int = 0) -> asyncio.Task[None]:
        """Refresh now, then every `interval_s` (default `settings.dashboard.refresh_s`), as a
        task on the running loop (the kernel's); `max_ticks` > 0 stops after that many."""
        self.stop()
        period = interval_s or self.settings.dashboard.refresh_s
        if view is not None:
            self.view = view

        async def loop() -> None:
            ticks = 0
            while True:
                await self.refresh(self.view, live=ticks > 0)
                ticks += 1
                if max_ticks and ticks >= max_ticks:
                    return
                await asyncio.sleep(period)

        self._task = asyncio.ensure_future(loop())
        return self._task

    def stop(self) -> None:
        """Stop the loop started by `start()`."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()

    async def wait(self) -> None:
        """Wait for the loop of `start()` to end (when bounded)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
