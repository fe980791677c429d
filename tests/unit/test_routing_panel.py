"""The routing picture: layout, styles from a real temporary store, selection and what-if."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from bqplot import Lines

from aidash_lib.routing import FailureKind, NodeKind, RoutingGraph, load_graph, node_id
from aidash_lib.store.history import open_history
from aidash_lib.store.schema import Event, RequestRecord, Sample
from aidash_lib.store.sqlite import SqliteStore
from aidash_lib.ui.routing_panel import (
    ARC_WIDTHS,
    BOX_H,
    FALLBACK_COLOURS,
    LINK_COLOURS,
    LINK_ROLES,
    MAPPING_FALLBACK_COLOUR,
    MIN_HEIGHT,
    ROW_PX,
    STATE_FILL,
    WHAT_IF_COLOUR,
    RoutingPanel,
    layout_graph,
    read_live,
    route_width,
)
from aidash_lib.ui.view import DashboardView

REPO = Path(__file__).resolve().parents[2]
SAMPLE = [REPO / "config" / name
          for name in ("litellm-config.yaml", "providers.yaml", "model-mappings.yaml")]


def synthetic_config(groups: int = 50, per_group: int = 3) -> str:
    """`groups` model groups of `per_group` deployments on four vLLM boxes and OpenAI; each
    group falls back to the next one and to the seventh after it."""
    boxes = [f"http://10.0.0.{i}:8000/v1" for i in range(1, 5)]
    lines = ["model_list:"]
    for g in range(groups):
        for d in range(per_group):
            lines += [f"  - model_name: model-group-{g:02d}", "    litellm_params:"]
            if d == per_group - 1:
                lines += [f"      model: openai/gpt-{g}", "      api_key: none"]
            else:
                lines += [f"      model: hosted_vllm/org/model-{g}",
                          f"      api_base: {boxes[(g + d) % len(boxes)]}"]
            lines += ["    model_info:", f"      id: dep-{g:02d}-{d}"]
    lines += ["router_settings:", "  fallbacks:"]
    for g in range(groups):
        lines.append(f"    - model-group-{g:02d}: [model-group-{(g + 1) % groups:02d},"
                     f" model-group-{(g + 7) % groups:02d}]")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def sample() -> RoutingGraph:
    return load_graph(SAMPLE)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> RoutingGraph:
    path = tmp_path_factory.mktemp("big") / "litellm.yaml"
    path.write_text(synthetic_config())
    return load_graph([path])


def store_with(path: Path, graph: RoutingGraph, states: dict[str, int],
               per_min: dict[str, float], now: float) -> Path:
    """A store with each deployment's state and request rate over the last 5 minutes."""
    samples = []
    for key, d in graph.deployments.items():
        labels = (("deployment_id", key), ("model_group", d.group))
        samples += [Sample("gateway_deployment_requests_per_min", labels, now - 300 + 30 * k,
                           per_min.get(key, 0.0)) for k in range(10)]
        samples.append(Sample("gateway_deployment_state", labels, now - 20,
                              float(states.get(key, 0))))
    SqliteStore(path).write_samples(samples)
    return path


def panel_for(graph: RoutingGraph, store: Path) -> RoutingPanel:
    return RoutingPanel(graph, history=open_history(store))


def link(panel: RoutingPanel, source: str, target: str) -> dict:
    index = {key: i for i, key in enumerate(panel.node_ids)}
    return next(item for item in panel.graph_mark.link_data
                if item["source"] == index[source] and item["target"] == index[target])


def colour(panel: RoutingPanel, key: str) -> str:
    return panel.graph_mark.colors[panel.node_ids.index(key)]


def lines(mark: Lines) -> int:
    """How many lines a multi-line mark draws (one line's x is kept 1-d)."""
    return (len(mark.x) if mark.x.ndim == 2 else 1) if mark.visible else 0


def arc_count(panel: RoutingPanel) -> int:
    return sum(lines(m) for m in panel.arc_marks)


# -- layout ------------------------------------------------------------------------------------


def test_sample_layout_is_columns_without_overlaps(sample: RoutingGraph) -> None:
    layout = layout_graph(sample)
    assert [b.node_id for b in layout.boxes] == [n.node_id for n in sample.nodes()]
    assert sorted(layout.columns) == [0, 1, 2, 3, 4]
    xs = [layout.columns[c][0] for c in sorted(layout.columns)]
    assert xs == sorted(xs)
    for box in layout.boxes:
        assert box.x == layout.columns[box.column][0]
    assert layout.height == MIN_HEIGHT
    assert layout.overlaps() == []
    assert layout.labels_fit() and layout.inside()


def test_fifty_groups_and_150_deployments_stay_readable(sample: RoutingGraph,
                                                         big: RoutingGraph) -> None:
    layout = layout_graph(big)
    assert len(big.groups) == 50 and len(big.deployments) == 150
    # the figure grows with the longest column instead of squeezing the nodes together
    assert layout.height >= 150 * ROW_PX > layout_graph(sample).height
    deployments = sorted(b.y for b in layout.boxes if b.kind is NodeKind.DEPLOYMENT)
    pitch = min(b - a for a, b in itertools.pairwise(deployments))
    assert pitch >= BOX_H + 4
    assert layout.overlaps(gap=3.0) == []
    assert layout.labels_fit() and layout.inside()
    # deployments sit beside their group: the group's box is within its deployments' span
    for name, group in big.groups.items():
        ys = [layout.box(node_id(NodeKind.DEPLOYMENT, d)).y for d in group.deployment_ids]
        assert min(ys) - ROW_PX <= layout.box(node_id(NodeKind.GROUP, name)).y <= max(ys) + ROW_PX
    panel = RoutingPanel(big, history=open_history(Path("/nonexistent/h.sqlite")))
    assert panel.figure.layout.height == f"{layout.height:.0f}px"
    assert panel.canvas.layout.overflow == "auto"


def test_long_generated_ids_are_shortened(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model_list:\n  - model_name: a-group-with-a-rather-long-name-indeed\n"
                    "    litellm_params: {model: openai/gpt-4o-mini, api_key: none}\n")
    graph = load_graph([path])
    layout = layout_graph(graph)
    (deployment,) = [b for b in layout.boxes if b.kind is NodeKind.DEPLOYMENT]
    assert deployment.label.startswith("gpt-4o-mini #") and len(deployment.label) == 19
    (group,) = [b for b in layout.boxes if b.kind is NodeKind.GROUP]
    assert len(group.label) == 28 and group.label.endswith("…")
    assert layout.labels_fit()


# -- the drawing ------------------------------------------------------------------------------


def test_every_node_and_edge_is_drawn_fallbacks_dashed(sample: RoutingGraph,
                                                      tmp_path: Path) -> None:
    panel = panel_for(sample, tmp_path / "h.sqlite")
    edges = sample.edges()
    fallbacks = [e for e in edges if e.kind in ("fallback", "mapping_fallback")]
    assert len(panel.graph_mark.node_data) == len(sample.nodes())
    assert len(panel.graph_mark.link_data) == len(edges) - len(fallbacks)
    assert arc_count(panel) == len(fallbacks) > 0
    assert all(m.line_style == "dashed" for m in panel.arc_marks)
    assert lines(panel.arrow_mark) == len(fallbacks)
    # one colour per kind of failure (and one for mapping fallbacks)
    assert {e.failure for e in fallbacks if e.kind == "fallback"} == set(FailureKind)
    drawn = {c for m in panel.arc_marks if m.visible for c in m.colors}
    assert drawn == set(FALLBACK_COLOURS.values()) | {MAPPING_FALLBACK_COLOUR}
    arc = panel.picture.edge(node_id(NodeKind.GROUP, "gpt-4o-mini"),
                             node_id(NodeKind.GROUP, "claude-haiku"), "fallback")
    assert arc.dashed and arc.role == "fallback"
    assert panel.graph_mark.link_type == "line" and not panel.graph_mark.directed
    assert "aidash-routing" in panel._dom_classes
    for css in ("aidash-routing-detail", "aidash-routing-whatif", "aidash-routing-legend"):
        assert css in getattr(panel, {"aidash-routing-detail": "detail",
                                      "aidash-routing-whatif": "whatif",
                                      "aidash-routing-legend": "legend"}[css])._dom_classes


async def test_widths_by_traffic_and_colours_by_state(sample: RoutingGraph,
                                                       tmp_path: Path) -> None:
    now = time.time()
    store = store_with(tmp_path / "h.sqlite", sample,
                       states={"llama3.1-8b-ollama": 2, "qwen2.5-coder-llamacpp": 1},
                       per_min={"llama3.1-8b-vllm": 30.0, "gpt-4o-mini-openai": 3.0},
                       now=now)
    SqliteStore(store).write_samples([Sample(
        "gateway_deployment_cooldowns",
        (("deployment_id", "gpt-4o-openai"), ("model_group", "gpt-4o")), now - 10, 1.0)])
    panel = panel_for(sample, store)
    await panel.refresh(DashboardView(range_name="15m", end_s=now))
    assert panel.last_error is None

    group = node_id(NodeKind.GROUP, "llama3.1-8b")
    busy = link(panel, group, node_id(NodeKind.DEPLOYMENT, "llama3.1-8b-vllm"))
    light = link(panel, node_id(NodeKind.GROUP, "gpt-4o-mini"),
                 node_id(NodeKind.DEPLOYMENT, "gpt-4o-mini-openai"))
    idle = link(panel, node_id(NodeKind.GROUP, "openai/*"),
                node_id(NodeKind.DEPLOYMENT, "openai-wildcard"))
    # 10 samples 30 s apart: 300 requests at 30/min, 30 at 3/min
    assert panel.live.deployments["llama3.1-8b-vllm"].traffic == pytest.approx(150.0, rel=0.05)
    assert busy["link_width"] == pytest.approx(route_width(150.0, 150.0), abs=0.01)
    assert busy["link_width"] > light["link_width"] > idle["link_width"]
    assert LINK_ROLES[busy["value"]] == "active" and LINK_ROLES[idle["value"]] == "idle"
    # the provider route carries the deployment's traffic too
    to_provider = link(panel, node_id(NodeKind.DEPLOYMENT, "llama3.1-8b-vllm"),
                       node_id(NodeKind.PROVIDER, "gpu-box-vllm"))
    assert to_provider["link_width"] == busy["link_width"]
    # fills by state; a group with one deployment in outage is partial
    assert colour(panel, node_id(NodeKind.DEPLOYMENT, "llama3.1-8b-vllm")) == STATE_FILL["healthy"]
    assert colour(panel, node_id(NodeKind.DEPLOYMENT, "llama3.1-8b-ollama")) == STATE_FILL["outage"]
    assert colour(panel, node_id(NodeKind.DEPLOYMENT, "qwen2.5-coder-llamacpp")) \
        == STATE_FILL["partial"]
    assert colour(panel, node_id(NodeKind.DEPLOYMENT, "gpt-4o-openai")) \
        == STATE_FILL["cooled_down"]
    assert colour(panel, group) == STATE_FILL["partial"]
    assert colour(panel, node_id(NodeKind.PROVIDER, "ollama")) == STATE_FILL["outage"]
    # a route to a deployment in outage is drawn as down
    dead = link(panel, group, node_id(NodeKind.DEPLOYMENT, "llama3.1-8b-ollama"))
    assert LINK_ROLES[dead["value"]] == "down"
    assert panel.link_scale.colors[dead["value"]] == LINK_COLOURS["down"]
    # gpt-4o (cooled down) is served by its fallback now
    assert "gpt-4o" in panel.live.now.rerouted
    assert "rerouted" in panel.picture.node(node_id(NodeKind.GROUP, "gpt-4o")).outlines
    takes = link(panel, node_id(NodeKind.GROUP, "claude-haiku"),
                 node_id(NodeKind.DEPLOYMENT, "claude-haiku-anthropic"))
    assert LINK_ROLES[takes["value"]] == "rerouted"


async def test_fallbacks_taken_widen_their_arc(sample: RoutingGraph, tmp_path: Path) -> None:
    now = time.time()
    store = store_with(tmp_path / "h.sqlite", sample, {}, {}, now)

    def attempt(call: str, deployment: str, group: str, status: str, at: float
                ) -> RequestRecord:
        return RequestRecord(call, at, at + 0.1, group, deployment, "m", "p", None, status, 0.1)

    SqliteStore(store).write_requests(
        record
        for i in range(4)
        for record in (attempt(f"c{i}", "llama3.1-8b-vllm", "llama3.1-8b", "failure", now - 60),
                       attempt(f"c{i}", "gpt-4o-mini-openai", "llama3.1-8b", "success",
                               now - 59))
    )
    panel = panel_for(sample, store)
    await panel.refresh(DashboardView(range_name="15m", end_s=now))
    arc = panel.picture.edge(node_id(NodeKind.GROUP, "llama3.1-8b"),
                             node_id(NodeKind.GROUP, "gpt-4o-mini"), "fallback")
    assert arc.role == "fallback_active" and arc.traffic == 4.0
    assert arc.width == ARC_WIDTHS[-1]
    quiet = panel.picture.edge(node_id(NodeKind.GROUP, "gpt-4o-mini"),
                               node_id(NodeKind.GROUP, "claude-haiku"), "fallback")
    assert quiet.width == ARC_WIDTHS[0]
    thick = panel.arc_marks[ARC_WIDTHS.index(arc.width)]
    assert lines(thick) >= 1


async def test_deployments_the_config_does_not_list_are_reported(sample: RoutingGraph,
                                                                 tmp_path: Path) -> None:
    now = time.time()
    store = store_with(tmp_path / "h.sqlite", sample, {}, {}, now)
    listed = '[{"deployment_id": "llama3.1-8b-vllm", "group": "llama3.1-8b"},' \
             ' {"deployment_id": "surprise", "group": "x"}]'
    SqliteStore(store).write_events([Event(now - 30, "deployments", "gw", listed)])
    panel = panel_for(sample, store)
    await panel.refresh(DashboardView(range_name="15m", end_s=now))
    assert panel.last_error is not None and "surprise" in panel.last_error
    assert panel.reading.gateway_deployments == ("llama3.1-8b-vllm", "surprise")


async def test_read_live_with_an_empty_store(sample: RoutingGraph, tmp_path: Path) -> None:
    SqliteStore(tmp_path / "h.sqlite").write_samples([Sample("x", (), time.time(), 1.0)])
    reading = await read_live(open_history(tmp_path / "h.sqlite"), sample,
                              time.time() - 900, time.time())
    assert reading.states == {} and reading.traffic == {} and reading.fallbacks == {}


# -- selection and what-if ----------------------------------------------------------------------


def test_selecting_a_node_shows_its_details_and_chain(sample: RoutingGraph,
                                                      tmp_path: Path) -> None:
    panel = panel_for(sample, tmp_path / "h.sqlite")
    assert "Click a node" in panel.detail.value
    # a click in the page sets the Graph mark's `selected`
    panel.graph_mark.selected = [panel.node_ids.index(node_id(NodeKind.GROUP, "qwen2.5-coder"))]
    assert panel.selected == "group:qwen2.5-coder"
    html = panel.detail.value
    assert 'data-node="group:qwen2.5-coder"' in html
    assert 'data-kind="general">on general error: llama3.1-8b → gpt-4o-mini → claude-haiku' \
        in html
    assert 'data-kind="context_window">on context window error: gpt-4o' in html
    assert "qwen2.5-coder-llamacpp" in html
    selected = panel.outline_marks["selected"]
    assert lines(selected) == 1
    # arcs that do not touch the selected node fade
    opacities = [o for m in panel.arc_marks if m.visible for o in m.opacities]
    assert 1.0 in opacities and 0.2 in opacities

    panel.select("gpu-box-vllm")
    assert panel.selected == "provider:gpu-box-vllm"
    assert "if this provider is down" in panel.detail.value
    assert panel.toggle_button.layout.display == ""
    panel.select("chat")
    assert 'data-node="mapping:chat"' in panel.detail.value
    assert panel.toggle_button.layout.display == "none"
    panel.graph_mark.selected = None
    assert panel.selected is None and not panel.outline_marks["selected"].visible
    with pytest.raises(ValueError):
        panel.select("no-such-node")


def test_marking_a_provider_down_shows_where_traffic_goes(sample: RoutingGraph,
                                                          tmp_path: Path) -> None:
    panel = panel_for(sample, tmp_path / "h.sqlite")
    before_mark = panel.graph_mark
    mini = node_id(NodeKind.GROUP, "gpt-4o-mini")
    haiku = node_id(NodeKind.GROUP, "claude-haiku")
    panel.select("gpt-4o-mini")
    assert "served by gpt-4o-mini" in panel.detail.value

    panel.mark_down(["openai"])
    assert panel.graph_mark is not before_mark  # redrawn with the new styles
    assert panel.down_select.value == ("openai",)
    for key in ("gpt-4o-mini-openai", "gpt-4o-openai", "openai-wildcard"):
        assert colour(panel, node_id(NodeKind.DEPLOYMENT, key)) == STATE_FILL["down"]
        assert LINK_ROLES[link(panel, node_id(NodeKind.DEPLOYMENT, key),
                               node_id(NodeKind.PROVIDER, "openai"))["value"]] == "down"
    assert colour(panel, node_id(NodeKind.PROVIDER, "openai")) == STATE_FILL["down"]
    assert "rerouted" in panel.picture.node(mini).outlines
    down_outlines = panel.outline_marks["down"]
    assert lines(down_outlines) == 4
    # the fallback that now carries gpt-4o-mini's requests is drawn as the what-if path
    path = panel.picture.edge(mini, haiku, "fallback")
    assert path.role == "what_if" and path.colour == WHAT_IF_COLOUR
    assert WHAT_IF_COLOUR in [c for m in panel.arc_marks if m.visible for c in m.colors]
    into = link(panel, haiku, node_id(NodeKind.DEPLOYMENT, "claude-haiku-anthropic"))
    assert LINK_ROLES[into["value"]] == "rerouted"
    html = panel.detail.value
    assert "goes to <span class=\"aidash-routing-served\">claude-haiku</span>" in html
    assert "What if</b> openai is down" in html
    assert "gpt-4o-mini → claude-haiku" in html
    assert panel.toggle_button.layout.display == ""

    panel.mark_down(["openai", "anthropic"])
    assert "gpt-4o-mini" in panel.what_if.lost
    assert "lost" in panel.picture.node(mini).outlines
    assert "lose service: gpt-4o-mini" in panel.detail.value

    panel.clear_button.click()
    assert panel.marked == () and panel.down_select.value == ()
    assert colour(panel, node_id(NodeKind.PROVIDER, "openai")) == STATE_FILL["unknown"]
    assert "What if" not in panel.detail.value


def test_the_whatif_control_and_the_toggle_mark_nodes_down(sample: RoutingGraph,
                                                           tmp_path: Path) -> None:
    panel = panel_for(sample, tmp_path / "h.sqlite")
    labels = dict(panel.down_select.options)
    assert labels["provider · openai"] == "openai"
    assert labels["group · llama3.1-8b"] == "llama3.1-8b"
    assert labels["deployment · llama3.1-8b-vllm"] == "llama3.1-8b-vllm"
    panel.down_select.value = ("gpu-box-vllm", "ollama")
    assert panel.marked == ("gpu-box-vllm", "ollama")
    assert "llama3.1-8b" in panel.what_if.rerouted
    panel.select("llama3.1-8b")
    panel.toggle_button.click()
    assert panel.marked == ("gpu-box-vllm", "ollama", "llama3.1-8b")
    assert colour(panel, node_id(NodeKind.GROUP, "llama3.1-8b")) == STATE_FILL["down"]
    assert panel.toggle_button.description == "Mark up"
    panel.toggle_button.click()
    assert panel.marked == ("gpu-box-vllm", "ollama")
    with pytest.raises(ValueError, match="no deployment, provider or group"):
        panel.mark_down(["nonsense"])


def test_whatif_on_the_big_graph(big: RoutingGraph, tmp_path: Path) -> None:
    started = time.perf_counter()
    panel = panel_for(big, tmp_path / "h.sqlite")
    panel.mark_down(["openai", "hosted_vllm@10.0.0.1:8000", "hosted_vllm@10.0.0.2:8000"])
    elapsed = time.perf_counter() - started
    assert elapsed < 10.0
    assert len(panel.graph_mark.node_data) == 50 + 150 + 5
    assert arc_count(panel) == 100
    assert panel.what_if.lost == ()
    # groups on boxes 1 and 2 only (every fourth) fall back to the next group
    assert panel.what_if.rerouted == tuple(f"model-group-{g:02d}" for g in range(0, 50, 4))
    assert panel.what_if.routes["model-group-00"].served_by == "model-group-01"
    assert "rerouted" in panel.picture.node(node_id(NodeKind.GROUP, "model-group-00")).outlines
    assert panel.picture.edge(node_id(NodeKind.GROUP, "model-group-00"),
                              node_id(NodeKind.GROUP, "model-group-01")).role == "what_if"
