"""Widgets built on shared Layout and style models, and hiding by CSS class.

Every ipywidget brings a Layout model of its own (about 1 KB of state: some forty empty
fields) and most a style model too. A page creates every model before it shows anything, so
on the dashboard (~850 models, two thirds of them layouts and styles, ~800 KB of state) they
were most of what a page loaded. The helpers here give widgets one Layout per distinct set of
attributes and one style per kind, shared by every widget that asks for the same.

Rule: a shared Layout is never changed after it is made, so a widget is hidden with
`set_hidden` (the class `aidash-hidden`, which `aidash_lib.ui.base.STYLE` defines), never
with `layout.display`; a widget that needs a layout of its own is given a new one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import ipywidgets as widgets
from ipywidgets.widgets.widget_string import HTMLStyle

HIDDEN = "aidash-hidden"

W = TypeVar("W", bound=widgets.Widget)

_shared: dict[tuple[Any, ...], widgets.Widget] = {}


def _one(key: tuple[Any, ...], make: Callable[[], W]) -> W:
    widget = _shared.get(key)
    if widget is None or widget.comm is None:  # never made, or closed (`Widget.close_all()`)
        widget = _shared[key] = make()
    return widget  # type: ignore[return-value]


def constant(name: str, make: Callable[[], W]) -> W:
    """One model made by `make` under `name`, for models never changed after they are made
    (a chart's fixed 0..1 scale, ...)."""
    return _one(("constant", name), make)


def layout(**attrs: str) -> widgets.Layout:
    """The shared Layout with exactly these attributes (`layout()`: the empty one)."""
    return _one(("layout", *sorted(attrs.items())), lambda: widgets.Layout(**attrs))


def style(kind: type[W], **attrs: Any) -> W:
    """The shared style model `kind` (`widgets.ButtonStyle`, ...) with these attributes."""
    return _one(("style", kind.__name__, *sorted(attrs.items())), lambda: kind(**attrs))


def _classed(widget: W, classes: Sequence[str]) -> W:
    for css in classes:
        widget.add_class(css)
    return widget


def html(value: str = "", *classes: str, **layout_attrs: str) -> widgets.HTML:
    """An HTML widget on the shared layout and style."""
    return _classed(widgets.HTML(value, layout=layout(**layout_attrs),
                                 style=style(HTMLStyle)), classes)


def hbox(children: Sequence[widgets.Widget] = (), *classes: str,
         **layout_attrs: str) -> widgets.HBox:
    """An HBox on the shared layout with these attributes."""
    return _classed(widgets.HBox(list(children), layout=layout(**layout_attrs)), classes)


def vbox(children: Sequence[widgets.Widget] = (), *classes: str,
         **layout_attrs: str) -> widgets.VBox:
    """A VBox on the shared layout with these attributes."""
    return _classed(widgets.VBox(list(children), layout=layout(**layout_attrs)), classes)


def button(*classes: str, layout_attrs: dict[str, str] | None = None,
           **kwargs: Any) -> widgets.Button:
    """A Button on the shared button style and the shared layout of `layout_attrs`."""
    return _classed(widgets.Button(layout=layout(**(layout_attrs or {})),
                                   style=style(widgets.ButtonStyle), **kwargs), classes)


def set_hidden(widget: widgets.DOMWidget, hidden: bool) -> None:
    """Hide or show a widget (by class: its layout may be shared); only a change is sent."""
    if hidden != is_hidden(widget):
        (widget.add_class if hidden else widget.remove_class)(HIDDEN)


def is_hidden(widget: widgets.DOMWidget) -> bool:
    """Whether `set_hidden` hid the widget."""
    return HIDDEN in widget._dom_classes
