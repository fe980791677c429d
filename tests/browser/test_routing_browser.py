"""The routing picture in a browser: Voilà serves small notebooks showing a `RoutingPanel` over a
temporary store (states and traffic written by the test), Debian's Chromium opens them. It
draws, clicking a node shows its chain, marking a provider down changes the picture, and with
50 groups and 150 deployments no two labels overlap on the page. Screenshots go to
`test-artifacts/routing-*.png`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from aidash_lib.routing import NodeKind, RoutingGraph, load_graph, node_id
from aidash_lib.serve import READY_PATH, voila_launch
from aidash_lib.store.schema import Sample
from aidash_lib.store.sqlite import SqliteStore
from aidash_lib.ui.routing_panel import STATE_FILL, WHAT_IF_COLOUR, layout_graph
from tests.servers.process import ServerProcess, free_port, start_server
from tests.servers.voila import ARTIFACTS, chromium  # noqa: F401  (the module's browser)
from tests.unit.test_routing_panel import SAMPLE, synthetic_config

TIMEOUT_MS = 90_000

CELL = """\
from aidash_lib.routing import load_graph
from aidash_lib.store.history import open_history
from aidash_lib.ui.routing_panel import RoutingPanel
from aidash_lib.ui.view import DashboardView

panel = RoutingPanel(load_graph({files!r}), history=open_history({store!r}))
await panel.refresh(DashboardView(range_name="15m"))
panel
"""

#: Each label's box on the page, and the pairs of labels whose boxes intersect.
LABEL_OVERLAPS_JS = """
() => {
  const boxes = [...document.querySelectorAll('.aidash-routing .bqplot g.node text.label')]
      .map((t) => { const r = t.getBoundingClientRect();
                    return {text: t.textContent, l: r.left, r: r.right, t: r.top, b: r.bottom}; });
  const hits = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const a = boxes[i], b = boxes[j];
    if (a.l < b.r && b.l < a.r && a.t < b.b && b.t < a.b) hits.push([a.text, b.text]);
  }
  const rects = [...document.querySelectorAll('.aidash-routing .bqplot g.node .element')]
      .map((e) => e.getBoundingClientRect());
  const outside = boxes.filter((b, i) => b.l < rects[i].left - 0.5 || b.r > rects[i].right + 0.5)
      .map((b) => b.text);
  return {count: boxes.length, hits, outside};
}
"""


def rgb(hex_colour: str) -> str:
    value = hex_colour.lstrip("#")
    return "rgb({}, {}, {})".format(*(int(value[i:i + 2], 16) for i in (0, 2, 4)))


def write_store(path: Path, graph: RoutingGraph, states: dict[str, int],
                per_min: dict[str, float]) -> Path:
    now = time.time()
    samples = []
    for key, d in graph.deployments.items():
        labels = (("deployment_id", key), ("model_group", d.group))
        samples += [Sample("gateway_deployment_requests_per_min", labels, now - 300 + 30 * k,
                           per_min.get(key, 0.0)) for k in range(10)]
        samples.append(Sample("gateway_deployment_state", labels, now - 5,
                              float(states.get(key, 0))))
    SqliteStore(path).write_samples(samples)
    return path


def write_notebook(path: Path, files: list[Path], store: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        CELL.format(files=[str(f) for f in files], store=str(store)))])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory, server_logs: Path
          ) -> Iterator[dict[str, Any]]:
    """Voilà serving two notebooks: the sample config and a synthetic 50×150 one."""
    folder = tmp_path_factory.mktemp("routing-voila")
    sample = load_graph(SAMPLE)
    write_notebook(folder / "sample.ipynb", SAMPLE, write_store(
        folder / "sample.sqlite", sample,
        states={"llama3.1-8b-ollama": 2, "qwen2.5-coder-llamacpp": 1},
        per_min={"llama3.1-8b-vllm": 30.0, "gpt-4o-mini-openai": 12.0,
                 "claude-haiku-anthropic": 4.0, "qwen2.5-coder-llamacpp": 2.0}))
    big_config = folder / "big-litellm.yaml"
    big_config.write_text(synthetic_config())
    big = load_graph([big_config])
    write_notebook(folder / "big.ipynb", [big_config], write_store(
        folder / "big.sqlite", big,
        states={f"dep-{g:02d}-0": g % 3 for g in range(50)},
        per_min={f"dep-{g:02d}-{d}": float((g * 7 + d * 3) % 11) for g in range(50)
                 for d in range(3)}))
    launch = voila_launch(folder, port=free_port())
    server: ServerProcess = start_server(
        "voila-routing", launch.argv, log_dir=server_logs, base_url=launch.url.rstrip("/"),
        ready_path=READY_PATH, cwd=folder, ready_timeout_s=90.0,
        ready_status=tuple(range(100, 600)),
    )
    try:
        yield {"url": launch.url.rstrip("/"), "sample": sample, "big": big, "server": server}
    finally:
        server.stop()


def open_panel(browser: Any, url: str, nodes: int) -> tuple[Any, Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded", timeout=TIMEOUT_MS)
    page.wait_for_selector(".aidash-routing.aidash-has-data", timeout=TIMEOUT_MS)
    page.wait_for_function(
        f"document.querySelectorAll('.aidash-routing .bqplot g.node').length === {nodes}",
        timeout=TIMEOUT_MS)
    page.wait_for_timeout(500)
    return context, page


def close(context: Any, page: Any) -> None:
    page.goto("about:blank")  # shuts the page's kernel down
    context.close()


def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.locator(".aidash-routing").first.screenshot(path=str(path))
    return path


def fill_of(page: Any, index: int) -> str:
    return page.locator(".aidash-routing .bqplot g.node .element").nth(index).evaluate(
        "e => getComputedStyle(e).fill")


def detail(page: Any) -> str:
    return page.locator(".aidash-routing-detail").inner_text()


def test_the_picture_draws_selects_and_shows_a_what_if(
        pages: dict[str, Any], chromium: Any) -> None:  # noqa: F811
    graph: RoutingGraph = pages["sample"]
    order = [n.node_id for n in graph.nodes()]
    edges = graph.edges()
    routes = [e for e in edges if e.kind not in ("fallback", "mapping_fallback")]
    context, page = open_panel(chromium, pages["url"] + "/voila/render/sample.ipynb",
                               len(order))
    try:
        labels = page.locator(".aidash-routing .bqplot g.node text.label").all_text_contents()
        assert labels == [b.label for b in layout_graph(graph).boxes]
        assert page.locator(".aidash-routing .bqplot path.link").count() == len(routes)
        dashed = page.eval_on_selector_all(
            ".aidash-routing .bqplot path.line",
            "els => els.filter(e => getComputedStyle(e).strokeDasharray !== 'none'"
            " && getComputedStyle(e.closest('g')).display !== 'none').length")
        assert dashed > 0
        outage = order.index(node_id(NodeKind.DEPLOYMENT, "llama3.1-8b-ollama"))
        healthy = order.index(node_id(NodeKind.DEPLOYMENT, "llama3.1-8b-vllm"))
        assert fill_of(page, outage) == rgb(STATE_FILL["outage"])
        assert fill_of(page, healthy) == rgb(STATE_FILL["healthy"])
        widths = page.eval_on_selector_all(
            ".aidash-routing .bqplot path.link", "els => els.map(e => e.style.strokeWidth)")
        assert len({w for w in widths}) > 2  # widths by traffic
        assert page.locator(".aidash-routing-legend").inner_text().count("fallback") >= 3
        shot(page, "routing-sample")

        # clicking a node shows its details and fallback chain
        page.locator(".aidash-routing .bqplot g.node").nth(
            order.index(node_id(NodeKind.GROUP, "qwen2.5-coder"))).click()
        page.wait_for_function(
            "document.querySelector('.aidash-routing-detail').innerText"
            ".includes('group qwen2.5-coder')", timeout=TIMEOUT_MS)
        text = detail(page)
        assert "on general error: llama3.1-8b → gpt-4o-mini → claude-haiku" in text
        assert "on context window error: gpt-4o" in text
        shot(page, "routing-sample-selected")

        # marking a provider down: its deployments turn grey, traffic goes elsewhere
        mini = order.index(node_id(NodeKind.DEPLOYMENT, "gpt-4o-mini-openai"))
        assert fill_of(page, mini) == rgb(STATE_FILL["healthy"])
        page.locator(".aidash-routing-whatif select").select_option(label=["provider · openai"])
        page.wait_for_function(
            "document.querySelector('.aidash-routing-detail').innerText"
            ".includes('What if openai is down')", timeout=TIMEOUT_MS)
        page.wait_for_timeout(800)
        assert fill_of(page, mini) == rgb(STATE_FILL["down"])
        assert fill_of(page, order.index(node_id(NodeKind.PROVIDER, "openai"))) \
            == rgb(STATE_FILL["down"])
        text = detail(page)
        assert "rerouted: gpt-4o-mini → claude-haiku" in text
        orange = page.eval_on_selector_all(
            ".aidash-routing .bqplot path.line",
            f"els => els.filter(e => getComputedStyle(e).stroke === '{rgb(WHAT_IF_COLOUR)}'"
            " && getComputedStyle(e.closest('g')).display !== 'none').length")
        assert orange >= 1
        shot(page, "routing-sample-whatif")

        page.locator(".aidash-routing-clear").click()
        page.wait_for_function(
            "!document.querySelector('.aidash-routing-detail').innerText.includes('What if')",
            timeout=TIMEOUT_MS)
        page.wait_for_timeout(800)
        assert fill_of(page, mini) == rgb(STATE_FILL["healthy"])
    finally:
        close(context, page)


def test_fifty_groups_and_150_deployments_are_readable(
        pages: dict[str, Any], chromium: Any) -> None:  # noqa: F811
    graph: RoutingGraph = pages["big"]
    layout = layout_graph(graph)
    context, page = open_panel(chromium, pages["url"] + "/voila/render/big.ipynb",
                               len(graph.nodes()))
    try:
        found = page.evaluate(LABEL_OVERLAPS_JS)
        assert found["count"] == 205
        assert found["hits"] == []
        assert found["outside"] == []
        # the figure is as tall as the layout asks, inside a scrolling canvas
        height = page.locator(".aidash-routing .bqplot").first.evaluate(
            "e => e.getBoundingClientRect().height")
        assert height == pytest.approx(layout.height, abs=2)
        canvas = page.locator(".aidash-routing-canvas").first
        assert canvas.evaluate("e => e.scrollHeight > e.clientHeight + 1000")
        shot(page, "routing-big")
        page.locator(".aidash-routing-whatif select").select_option(
            label=["provider · hosted_vllm@10.0.0.1:8000", "provider · hosted_vllm@10.0.0.2:8000",
                   "provider · openai"])
        page.wait_for_function(
            "document.querySelector('.aidash-routing-detail').innerText"
            ".includes('model-group-00 → model-group-01')", timeout=TIMEOUT_MS)
        page.wait_for_timeout(800)
        shot(page, "routing-big-whatif")
    finally:
        close(context, page)
