"""The inspector's rows as one widget: markup, selection, and the click message."""

from __future__ import annotations

from aidash_lib.ui.request_rows import RequestRows, ShownRow

ROWS = [ShownRow("c-2", 20.0, '<div class="aidash-inspector-cells">two</div>'),
        ShownRow('c"1<', 10.0, '<div class="aidash-inspector-cells">one</div>')]


def test_rows_in_order_with_escaped_ids_and_one_selected() -> None:
    rows = RequestRows()
    rows.show(ROWS, selected="c-2")
    assert rows.html.index('data-call-id="c-2"') < rows.html.index('data-call-id="c&quot;1&lt;"')
    assert rows.html.count("aidash-inspector-open") == 2
    assert 'class="aidash-inspector-row aidash-inspector-selected" data-call-id="c-2"' in rows.html
    rows.select(None)
    assert "aidash-inspector-selected" not in rows.html


def test_only_a_change_is_sent() -> None:
    rows = RequestRows()
    changes: list[str] = []
    rows.observe(lambda change: changes.append(change["new"]), "html")
    rows.show(ROWS)
    rows.show(list(ROWS))
    rows.select(None)
    assert len(changes) == 1
    rows.show([])
    assert changes[-1] == "" and len(changes) == 2


def test_a_click_message_opens_the_row_it_names() -> None:
    rows = RequestRows()
    opened: list[ShownRow] = []
    rows.on_open(opened.append)
    rows.show(ROWS)
    rows._message(rows, {"open": 'c"1<'}, [])
    rows._message(rows, {"open": "gone"}, [])  # a row no longer shown
    rows._message(rows, {"something": "else"}, [])
    rows._message(rows, "not a dict", [])
    assert opened == [ROWS[1]]


def test_the_front_end_sends_the_call_id_of_the_clicked_row() -> None:
    esm = RequestRows._esm
    assert 'closest(".aidash-inspector-row[data-call-id]")' in esm
    assert "model.send({ open: row.dataset.callId })" in esm
    assert 'model.on("change:html", draw)' in esm
