"""Widgets on shared layout and style models: one model per distinct layout, hiding by class."""

from __future__ import annotations

import ipywidgets as widgets
import pytest

from aidash_lib.ui import shared_models as shared

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_equal_layouts_are_one_model_and_different_ones_are_not() -> None:
    a, b = shared.html("a"), shared.html("b", "aidash-x")
    assert a.layout is b.layout and a.style is b.style
    assert "aidash-x" in b._dom_classes
    wide = shared.hbox([a], width="100%")
    assert wide.layout is shared.layout(width="100%")
    assert wide.layout is not a.layout and wide.layout.width == "100%"
    assert shared.layout(width="1px", height="2px") is shared.layout(height="2px", width="1px")
    first, second = shared.button(description="x"), shared.button(description="y")
    assert first.style is second.style and first.layout is second.layout
    assert first.style is not a.style


def test_a_closed_shared_model_is_replaced() -> None:
    layout = shared.layout(width="123px")
    layout.close()
    again = shared.layout(width="123px")
    assert again is not layout and again.comm is not None
    assert shared.html("", width="123px").layout is again


def test_hiding_is_by_class_and_leaves_the_shared_layout_alone() -> None:
    one, other = shared.html("1"), shared.html("2")
    sent: list[object] = []
    one.observe(lambda change: sent.append(change["new"]), "_dom_classes")
    shared.set_hidden(one, True)
    shared.set_hidden(one, True)  # no change, nothing sent
    assert shared.is_hidden(one) and not shared.is_hidden(other)
    assert one.layout.display is None, "the shared layout was changed"
    shared.set_hidden(one, False)
    assert not shared.is_hidden(one)
    assert len(sent) == 2
    hidden_from_start = shared.vbox([], "aidash-x", shared.HIDDEN)
    assert shared.is_hidden(hidden_from_start)


def test_the_style_sheet_hides_the_class() -> None:
    from aidash_lib.ui.base import STYLE

    assert ".aidash-hidden { display: none !important; }" in STYLE
    assert isinstance(shared.style(widgets.ButtonStyle), widgets.ButtonStyle)
