"""The routing picture: model groups, deployments and providers as a graph (bqplot `Graph`).

Columns, left to right: mappings, aliases, model groups (and names nothing serves), deployments,
providers (`RoutingGraph.nodes()`). Routes (alias, group -> deployment -> provider, mapping
targets) are the `Graph` mark's links, their width by the requests they carried in the view's
window; fallbacks are dashed arcs (one colour per kind of failure) with an arrowhead. A node's
fill is its live state; outlines mark the selected node, what is marked down, and groups that
lose service or are rerouted. Clicking a node shows its details and fallback chains; marking
deployments, providers or groups as down (the what-if control, or `mark_down`) redraws where
traffic would go: the rerouted paths in orange, the load on each deployment as it would be.

Live state comes from the store only: `gateway_deployment_state` (0 healthy, 1 partial outage,
2 outage), `gateway_deployment_cooldowns`, `gateway_deployment_requests_per_min`, the last
`deployments` event (what the gateway has loaded), and the request records for the fallbacks
taken (consecutive attempts of one call in different groups).

The layout is computed, not simulated (`layout_graph`): each column's nodes are spread evenly
over the figure's height, which grows with the longest column (`ROW_PX` a node), boxes are sized
to their monospace labels, and the figure scrolls inside the panel. Stable CSS classes:
`aidash-routing` (root), `aidash-routing-canvas` (the scrolling figure), `aidash-routing-detail`,
`aidash-routing-whatif` (the down-marking control), `aidash-routing-legend`. Each node's rect
is the `.element` of a `g.node` in node order (`RoutingPanel.node_ids`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import bqplot as bq
import ipywidgets as widgets

from aidash_lib.routing import (
    DownSet,
    Edge,
    FailureKind,
    LiveGraph,
    LiveState,
    NodeKind,
    Route,
    RoutingGraph,
    WhatIf,
    build_graph,
    load_graph,
    node_id,
    overlay,
    routing_files,
)
from aidash_lib.ui.base import PanelBase, esc, fmt_number, fmt_when
from aidash_lib.ui.common import last_values, latest_deployments, rate_total
from aidash_lib.yamlfile import Severity, UnusableInput

if TYPE_CHECKING:
    from aidash_lib.settings import Settings
    from aidash_lib.store.history import History
    from aidash_lib.ui.view import DashboardView

log = logging.getLogger(__name__)

# -- geometry (pixels: the figure's scales map them one to one) -------------------------------

FONT_PX = 11
#: Advance of one monospace character at FONT_PX (DejaVu Sans Mono: 0.602 em), with a margin.
CHAR_PX = 6.8
PAD_X = 6.0
BOX_H = 15.0
#: Vertical pitch of the nodes of the longest column.
ROW_PX = 20.0
MIN_HEIGHT = 300.0
TOP_PAD = 12.0
SIDE_PAD = 12.0
COLUMN_GAP = 64.0
#: Extra room left of a column whose nodes fall back to each other (the arcs bulge there).
FALLBACK_LANE = 80.0
#: Extra gap before a column with fewer nodes than the one before: this share of the height.
FAN_GAP_SHARE = 0.1
MAX_FAN_GAP = 300.0
MAX_LABEL = 28
MIN_BOX_W = 44.0
ARC_POINTS = 15
#: The scrolling canvas is at most this tall; the figure inside grows with the graph.
CANVAS_MAX_H = 620

COLUMN_NAMES = {0: "mappings", 1: "aliases", 2: "model groups", 3: "deployments",
                4: "providers"}
_ROUNDING = {NodeKind.MAPPING: 7.0, NodeKind.ALIAS: 7.0, NodeKind.GROUP: 7.0,
             NodeKind.MISSING: 7.0, NodeKind.DEPLOYMENT: 2.0, NodeKind.PROVIDER: 0.0}

# -- colours -----------------------------------------------------------------------------------

#: Node fills by state.
STATE_FILL: dict[str, str] = {
    "healthy": "#a7dfb4",
    "partial": "#f5d77a",
    "outage": "#f3a5a5",
    "cooled_down": "#c9b6f2",
    "unknown": "#e8ebef",
    "down": "#9aa4ae",
    "missing": "#ffffff",
}
STATE_WORDS: dict[str, str] = {
    "healthy": "healthy", "partial": "partial outage", "outage": "outage",
    "cooled_down": "cooled down", "unknown": "no data", "down": "marked down",
    "missing": "nothing serves it",
}
#: Outlines drawn around nodes: (colour, width, dashed), in drawing order.
OUTLINES: dict[str, tuple[str, float, bool]] = {
    "missing": ("#cf222e", 1.5, True),
    "down": ("#24292f", 2.0, True),
    "rerouted": ("#e36209", 2.5, False),
    "lost": ("#cf222e", 2.5, False),
    "selected": ("#0969da", 3.0, False),
}
OUTLINE_WORDS = {"rerouted": "traffic rerouted", "lost": "loses service",
                 "down": "marked down (what-if)", "missing": "nothing serves it",
                 "selected": "selected"}
#: Route (link) roles, in the order of the link colour scale.
LINK_ROLES: tuple[str, ...] = ("idle", "active", "no_figure", "down", "rerouted")
LINK_COLOURS: dict[str, str] = {
    "idle": "#c8d0d8", "active": "#4e79a7", "no_figure": "#8c959f", "down": "#f3a5a5",
    "rerouted": "#e36209",
}
FALLBACK_COLOURS: dict[FailureKind, str] = {
    FailureKind.GENERAL: "#8250df",
    FailureKind.CONTEXT_WINDOW: "#1b7c83",
    FailureKind.CONTENT_POLICY: "#bf3989",
}
MAPPING_FALLBACK_COLOUR = "#6e7781"
WHAT_IF_COLOUR = "#e36209"
#: Widths of the arc marks (one dashed `Lines` mark each; an arc takes the nearest).
ARC_WIDTHS: tuple[float, ...] = (1.3, 2.5, 4.0, 6.0)
ROUTE_MIN_W, ROUTE_MAX_W = 1.5, 5.0

#: Recent attempts read to find the fallbacks taken.
FALLBACK_SCAN_ROWS = 5000
#: How far back a deployment state still counts as current.
STATE_MAX_AGE_S = 900.0

STYLE = f"""<style>
.aidash-routing .bqplot .network .node .label {{ font: {FONT_PX}px "DejaVu Sans Mono", monospace;
  fill: #1f2328; text-shadow: none; pointer-events: none; }}
.aidash-routing .bqplot .network .node .element {{ stroke: #57606a; stroke-width: 1px;
  cursor: pointer; }}
.aidash-routing .bqplot .network .link {{ fill: none; stroke-opacity: 0.8; }}
.aidash-routing-canvas {{ border: 1px solid #eaeef2; border-radius: 4px; }}
.aidash-routing-columns {{ position: sticky; top: 0; z-index: 2; background: #fff;
  border-bottom: 1px solid #eaeef2; }}
.aidash-routing-columns span {{ position: absolute; top: 1px; transform: translateX(-50%);
  font-size: 11px; color: #57606a; white-space: nowrap; }}
.aidash-routing-detail {{ font-size: 12px; }}
.aidash-routing .widget-html-content {{ line-height: 1.45; }}
.aidash-routing-detail ul {{ margin: 2px 0; padding-left: 16px; }}
.aidash-routing-detail table.aidash-table {{ font-size: 12px; }}
.aidash-routing-detail table.aidash-table td {{ white-space: normal; word-break: break-word; }}
.aidash-routing-detail h4 {{ margin: 2px 0 6px 0; font-size: 14px; }}
.aidash-routing-detail .aidash-routing-chain {{ margin: 2px 0; }}
.aidash-routing-detail .aidash-routing-down {{ text-decoration: line-through; color: #8c959f; }}
.aidash-routing-detail .aidash-routing-served {{ font-weight: 600; color: #1a7f37; }}
.aidash-routing-detail .aidash-routing-lost {{ font-weight: 600; color: #b42318; }}
.aidash-routing-legend svg {{ vertical-align: middle; margin: 0 3px 0 10px; }}
.aidash-routing-whatif select {{ font-size: 12px; }}
</style>"""


# -- layout ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeBox:
    """A node placed: centre (x, y) and box size in pixels, and the label shown in it."""

    node_id: str
    kind: NodeKind
    name: str
    label: str
    column: int
    x: float
    y: float
    width: float
    height: float

    @property
    def left(self) -> float:
        return self.x - self.width / 2

    @property
    def right(self) -> float:
        return self.x + self.width / 2

    @property
    def top(self) -> float:
        return self.y - self.height / 2

    @property
    def bottom(self) -> float:
        return self.y + self.height / 2

    @property
    def label_width(self) -> float:
        """The label's width in pixels (monospace)."""
        return len(self.label) * CHAR_PX


@dataclass(frozen=True)
class RoutingLayout:
    """Where every node goes: boxes in `RoutingGraph.nodes()` order, the figure's size, each
    column's centre and width, and how far fallback arcs within a column may bulge left."""

    boxes: tuple[NodeBox, ...]
    width: float
    height: float
    columns: dict[int, tuple[float, float]]
    lanes: dict[int, float]
    positions: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", {b.node_id: i for i, b in enumerate(self.boxes)})

    def index(self, node: str) -> int:
        return self.positions[node]

    def box(self, node: str) -> NodeBox:
        return self.boxes[self.index(node)]

    def overlaps(self, gap: float = 2.0) -> list[tuple[str, str]]:
        """Pairs of boxes closer than `gap` pixels in both directions (none in a good layout)."""
        found = []
        ordered = sorted(self.boxes, key=lambda b: b.left)
        for i, a in enumerate(ordered):
            for b in ordered[i + 1:]:
                if b.left >= a.right + gap:
                    break
                if b.top < a.bottom + gap and a.top < b.bottom + gap:
                    found.append((a.node_id, b.node_id))
        return found

    def labels_fit(self) -> bool:
        """Whether every label fits inside its box."""
        return all(b.label_width <= b.width - 2 * PAD_X + 0.01 for b in self.boxes)

    def inside(self) -> bool:
        """Whether every box lies inside the figure."""
        return all(b.left >= 0 and b.top >= 0 and b.right <= self.width
                   and b.bottom <= self.height for b in self.boxes)


def short_label(graph: RoutingGraph, kind: NodeKind, name: str) -> str:
    """What a node's box shows: its name, shortened to `MAX_LABEL` characters (a LiteLLM
    generated id as its model and the id's first characters)."""
    text = name
    if kind is NodeKind.DEPLOYMENT:
        deployment = graph.deployments.get(name)
        if deployment is not None and deployment.id_source == "litellm":
            text = f"{deployment.model.rsplit('/', 1)[-1]} #{name[:6]}"
    if len(text) > MAX_LABEL:
        text = text[:MAX_LABEL - 1] + "…"
    return text


def _same_column_spans(graph: RoutingGraph, columns: Mapping[str, int],
                       ys: Mapping[str, float]) -> dict[int, float]:
    """For each column whose nodes fall back to each other, the longest such arc (pixels)."""
    spans: dict[int, float] = {}
    for e in graph.edges():
        if e.kind in ("fallback", "mapping_fallback") and e.source in columns \
                and columns[e.source] == columns.get(e.target):
            column = columns[e.source]
            spans[column] = max(spans.get(column, 0.0), abs(ys[e.source] - ys[e.target]))
    return spans


def layout_graph(graph: RoutingGraph) -> RoutingLayout:
    """Columns left to right, nodes spread evenly down each column, ordered so that routes
    cross little: groups in config order, deployments by group, providers, aliases and mappings
    by the mean position of what they connect to."""
    nodes = graph.nodes()
    edges = graph.edges()
    by_id = {n.node_id: n for n in nodes}
    columns: dict[int, list[str]] = {}
    for n in nodes:
        columns.setdefault(n.column, []).append(n.node_id)
    position: dict[str, float] = {}

    def place(column: int, ordered: Sequence[str]) -> None:
        columns[column] = list(ordered)
        for i, key in enumerate(ordered):
            position[key] = (i + 0.5) / len(ordered)

    def mean(keys: Iterable[str], default: float) -> float:
        values = [position[k] for k in keys if k in position]
        return sum(values) / len(values) if values else default

    groups = [k for k in columns.get(2, []) if by_id[k].kind is NodeKind.GROUP]
    place(2, groups + [k for k in columns.get(2, []) if by_id[k].kind is NodeKind.MISSING])
    rank = {name: position[node_id(NodeKind.GROUP, name)] for name in graph.groups}
    member = {d: i for group in graph.groups.values() for i, d in enumerate(group.deployment_ids)}

    def deployment_key(key: str) -> tuple[float, int]:
        name = by_id[key].label
        group = graph.deployments[name].group
        return rank.get(group, 1.0), member.get(name, 0)

    place(3, sorted(columns.get(3, []), key=deployment_key))
    targets: dict[str, list[str]] = {}
    sources: dict[str, list[str]] = {}
    for e in edges:
        targets.setdefault(e.source, []).append(e.target)
        sources.setdefault(e.target, []).append(e.source)
    order = {key: i for i, key in enumerate(n.node_id for n in nodes)}
    place(4, sorted(columns.get(4, []), key=lambda k: (mean(sources.get(k, []), 2.0), order[k])))
    place(1, sorted(columns.get(1, []), key=lambda k: (
        mean([t for t in targets.get(k, []) if by_id[t].column == 2][:1], 2.0), order[k])))
    place(0, sorted(columns.get(0, []), key=lambda k: (mean(targets.get(k, []), 2.0), order[k])))

    longest = max((len(keys) for keys in columns.values()), default=0)
    height = max(MIN_HEIGHT, longest * ROW_PX + 2 * TOP_PAD)
    ys: dict[str, float] = {}
    for keys in columns.values():
        usable = height - 2 * TOP_PAD
        for i, key in enumerate(keys):
            ys[key] = TOP_PAD + (i + 0.5) * usable / len(keys)
    column_of = {n.node_id: n.column for n in nodes}
    spans = _same_column_spans(graph, column_of, ys)
    labels = {n.node_id: short_label(graph, n.kind, n.label) for n in nodes}
    widths = {key: max(MIN_BOX_W, len(labels[key]) * CHAR_PX + 2 * PAD_X) for key in labels}
    centres: dict[int, tuple[float, float]] = {}
    lanes: dict[int, float] = {}
    left = SIDE_PAD
    previous = 0
    for i, column in enumerate(sorted(k for k, v in columns.items() if v)):
        lane = min(FALLBACK_LANE, 24.0 + 0.2 * spans[column]) if column in spans else 0.0
        gap = COLUMN_GAP if i else 0.0
        if previous > len(columns[column]):  # many into few: room for the fan of routes
            gap += min(MAX_FAN_GAP, FAN_GAP_SHARE * height * (1 - len(columns[column]) / previous))
        previous = len(columns[column])
        left += lane + gap
        lanes[column] = lane + 0.3 * gap
        width = max(widths[k] for k in columns[column])
        centres[column] = (left + width / 2, width)
        left += width
    boxes = tuple(
        NodeBox(n.node_id, n.kind, n.label, labels[n.node_id], n.column, centres[n.column][0],
                ys[n.node_id], widths[n.node_id], BOX_H)
        for n in nodes
    )
    return RoutingLayout(boxes, left + SIDE_PAD, height, centres, lanes)


# -- live state from the store -------------------------------------------------------------------


@dataclass(frozen=True)
class LiveReading:
    """What the store says about the deployments in a window, before overlaying the graph."""

    states: dict[str, str] = field(default_factory=dict)
    traffic: dict[str, float] = field(default_factory=dict)
    fallbacks: dict[tuple[str, str], float] = field(default_factory=dict)
    state_time_s: float | None = None
    gateway_deployments: tuple[str, ...] | None = None  # None: no `deployments` event yet


_STATE_VALUES = {0: LiveState.HEALTHY, 1: LiveState.PARTIAL, 2: LiveState.OUTAGE}


async def read_live(
    history: History, graph: RoutingGraph, start_s: float, end_s: float,
    *, scan_rows: int = FALLBACK_SCAN_ROWS,
) -> LiveReading:
    """Deployment states at `end_s`, requests per deployment in the window, and the fallbacks
    taken ((group, fallback group) -> calls, from the last `scan_rows` attempts)."""
    state_frame = await history.series("gateway_deployment_state",
                                       max(start_s, end_s - STATE_MAX_AGE_S), end_s)
    states: dict[str, str] = {}
    newest: float | None = None
    for key, (value, when) in last_values(state_frame, "deployment_id").items():
        state = _STATE_VALUES.get(round(value))
        if state is not None:
            states[key] = state.value
            newest = when if newest is None else max(newest, when)
    policy = graph.policy
    if not policy.disable_cooldowns:
        since = end_s - max(policy.cooldown_time_s, 1.0) - 30.0
        cooled = await history.series("gateway_deployment_cooldowns", max(start_s, since), end_s)
        if not cooled.empty:
            hot = cooled[cooled["value"] > 0]
            for key in hot["deployment_id"].astype("object").dropna().unique():
                if states.get(str(key)) != LiveState.OUTAGE.value:
                    states[str(key)] = LiveState.COOLED_DOWN.value
    requests = await history.series("gateway_deployment_requests_per_min", start_s, end_s)
    traffic = rate_total(requests, by="deployment_id")
    listed, _ = await latest_deployments(history, end_s)
    return LiveReading(
        states, traffic, await fallbacks_taken(history, graph, start_s, end_s, scan_rows),
        newest, tuple(d.deployment_id for d in listed) if listed else None,
    )


async def fallbacks_taken(
    history: History, graph: RoutingGraph, start_s: float, end_s: float, scan_rows: int,
) -> dict[tuple[str, str], float]:
    """(group, next group) -> calls whose consecutive attempts went from one to the other
    (empty when the store has no request records or cannot read them)."""
    try:
        frame = await history.requests(start_s, end_s, limit=scan_rows)
    except Exception as exc:  # an extra: without request records the arcs show no traffic
        log.debug("fallbacks taken not read: %s", exc)
        return {}
    if frame.empty:
        return {}
    groups = {key: d.group for key, d in graph.deployments.items()}
    frame = frame.sort_values(["started", "id"])
    frame = frame.assign(group=frame["deployment_id"].astype("object").map(groups))
    frame["next_group"] = frame.groupby("call_id")["group"].shift(-1)
    moved = frame[frame["group"].notna() & frame["next_group"].notna()
                  & (frame["group"] != frame["next_group"])]
    if moved.empty:
        return {}
    counts = moved.groupby(["group", "next_group"])["call_id"].nunique()
    return {(str(a), str(b)): float(n) for (a, b), n in counts.items()}


# -- the picture: every node's and edge's style -------------------------------------------------


@dataclass(frozen=True)
class NodeStyle:
    """How a node is drawn: its state (a `STATE_FILL` key), fill, and outlines (`OUTLINES`)."""

    node_id: str
    state: str
    fill: str
    outlines: tuple[str, ...] = ()


@dataclass(frozen=True)
class EdgeStyle:
    """How an edge is drawn. `traffic`: requests in the window (as they would be under a
    what-if), None where no figure exists for that kind of route."""

    edge: Edge
    role: str
    colour: str
    width: float
    dashed: bool
    traffic: float | None = None


@dataclass(frozen=True)
class Picture:
    nodes: tuple[NodeStyle, ...]
    edges: tuple[EdgeStyle, ...]

    def node(self, key: str) -> NodeStyle:
        return next(n for n in self.nodes if n.node_id == key)

    def edge(self, source: str, target: str, kind: str | None = None) -> EdgeStyle:
        return next(e for e in self.edges if e.edge.source == source and e.edge.target == target
                    and (kind is None or e.edge.kind == kind))


def name_node(graph: RoutingGraph, name: str) -> str:
    """The node a name stands for in the picture (alias, group or missing name)."""
    if name in graph.aliases:
        return node_id(NodeKind.ALIAS, name)
    group = graph.resolve(name)
    return node_id(NodeKind.GROUP, group) if group else node_id(NodeKind.MISSING, name)


def serving_path(graph: RoutingGraph, route: Route) -> list[tuple[str, str]]:
    """The fallback steps (source node, target node) from the request to what serves it."""
    if route.lost or not route.rerouted:
        return []
    attempts = list(route.attempts)
    parents: dict[int, int] = {}
    for i, attempt in enumerate(attempts):
        for j in range(i - 1, -1, -1):
            if attempts[j].depth == attempt.depth - 1:
                parents[i] = j
                break
    steps = []
    i = len(attempts) - 1
    while i in parents:
        j = parents[i]
        steps.append((name_node(graph, attempts[j].name), name_node(graph, attempts[i].name)))
        i = j
    return steps[::-1]


def route_width(traffic: float | None, top: float) -> float:
    """A route's width: thin when idle or unknown, up to `ROUTE_MAX_W` for the busiest."""
    if not traffic or top <= 0:
        return 1.0 if traffic == 0 else 1.3
    return ROUTE_MIN_W + (ROUTE_MAX_W - ROUTE_MIN_W) * math.sqrt(min(traffic / top, 1.0))


def arc_width(traffic: float | None, top: float) -> float:
    """An arc's width: one of `ARC_WIDTHS` (the thinnest when it carried nothing)."""
    if not traffic or top <= 0:
        return ARC_WIDTHS[0]
    share = math.sqrt(min(traffic / top, 1.0))
    return ARC_WIDTHS[1 + min(len(ARC_WIDTHS) - 2, int(share * (len(ARC_WIDTHS) - 1)))]


def build_picture(
    graph: RoutingGraph,
    live: LiveGraph,
    what_if: WhatIf,
    marked: Iterable[str] = (),
    selected: str | None = None,
) -> Picture:
    """Every node's and edge's style for the live state and a what-if (`what_if` is computed
    with what is down now plus what is `marked` down)."""
    marked_set = graph.down_set(list(marked))
    down = what_if.down
    routes = what_if.routes
    what_if_on = bool(marked_set.deployments or marked_set.providers or marked_set.groups)

    traffic = {key: item.traffic for key, item in live.deployments.items()}
    projected = dict(traffic) if not what_if_on else {key: 0.0 for key in traffic}
    rerouted_into: set[str] = set()
    moved: dict[tuple[str, str], float] = {}
    if what_if_on:
        for name, group in graph.groups.items():
            own = sum(traffic.get(d, 0.0) for d in group.deployment_ids)
            route = routes.get(name)
            if route is None or route.lost or not route.deployments:
                continue
            for d in route.deployments:
                projected[d] = projected.get(d, 0.0) + own / len(route.deployments)
    for name, route in routes.items():
        if route.rerouted and (name in graph.groups or name in graph.aliases):
            rerouted_into.update(route.deployments)
            own = sum(traffic.get(d, 0.0) for d in graph.groups[name].deployment_ids) \
                if name in graph.groups else 0.0
            for step in serving_path(graph, route):
                moved[step] = moved.get(step, 0.0) + own

    nodes: list[NodeStyle] = []
    for n in graph.nodes():
        state, outlines = _node_state(graph, live, routes, marked_set, n.kind, n.label)
        if n.node_id == selected:
            outlines = (*outlines, "selected")
        nodes.append(NodeStyle(n.node_id, state, STATE_FILL[state], outlines))

    top = max([v for v in projected.values() if v] or [0.0])
    fallback_top = max([e.traffic or 0.0 for e in live.edges if e.edge.kind == "fallback"]
                       + list(moved.values()) or [0.0])
    edges: list[EdgeStyle] = []
    live_edges = {(e.edge.source, e.edge.target, e.edge.kind, e.edge.failure): e
                  for e in live.edges}
    for edge in graph.edges():
        source = edge.source.split(":", 1)[1]
        target = edge.target.split(":", 1)[1]
        if edge.kind in ("fallback", "mapping_fallback"):
            key = (edge.source, edge.target)
            if key in moved:
                edges.append(EdgeStyle(edge, "what_if", WHAT_IF_COLOUR,
                                       arc_width(moved[key], fallback_top), True, moved[key]))
                continue
            item = live_edges.get((edge.source, edge.target, edge.kind, edge.failure))
            count = item.traffic if item is not None else None
            colour = (FALLBACK_COLOURS[edge.failure] if edge.failure is not None
                      else MAPPING_FALLBACK_COLOUR)
            edges.append(EdgeStyle(edge, "fallback_active" if count else "fallback", colour,
                                   arc_width(count, fallback_top), True, count))
            continue
        if edge.kind in ("deployment", "provider"):
            deployment = target if edge.kind == "deployment" else source
            if deployment in marked_set.deployments \
                    or not live.deployments[deployment].state.serving:
                edges.append(EdgeStyle(edge, "down", LINK_COLOURS["down"], 1.0, False,
                                       projected.get(deployment)))
                continue
            count = projected.get(deployment, 0.0)
            role = "rerouted" if deployment in rerouted_into else (
                "active" if count else "idle")
            edges.append(EdgeStyle(edge, role, LINK_COLOURS[role], route_width(count, top),
                                   False, count))
            continue
        ends = {source, target}
        role = "down" if ends & (set(down.groups) | set(marked_set.providers)) else "no_figure"
        edges.append(EdgeStyle(edge, role, LINK_COLOURS[role], 1.3, False, None))
    return Picture(tuple(nodes), tuple(edges))


def _node_state(
    graph: RoutingGraph, live: LiveGraph, routes: Mapping[str, Route], marked: DownSet,
    kind: NodeKind, name: str,
) -> tuple[str, tuple[str, ...]]:
    """A node's state (a `STATE_FILL` key) and outlines; `marked`: what the what-if marks
    down (a provider's and a group's deployments included)."""
    if kind is NodeKind.MISSING:
        return "missing", ("missing",)
    if kind is NodeKind.DEPLOYMENT:
        if name in marked.deployments:
            return "down", ("down",)
        return live.deployments[name].state.value, ()
    if kind is NodeKind.PROVIDER:
        if name in marked.providers:
            return "down", ("down",)
        return live.providers.get(name, LiveState.UNKNOWN).value, ()
    route = routes.get(name)
    outlines: tuple[str, ...] = ()
    if route is not None and route.lost:
        outlines = ("lost",)
    elif route is not None and route.rerouted:
        outlines = ("rerouted",)
    if kind is NodeKind.GROUP:
        if name in marked.groups:
            return "down", ("down", *outlines)
        return live.groups.get(name, LiveState.UNKNOWN).value, outlines
    if route is None:
        return "unknown", outlines
    if route.lost:
        return "outage", outlines
    served = live.groups.get(route.served_by or "", LiveState.UNKNOWN)
    if route.rerouted and served is not LiveState.UNKNOWN:
        return "partial", outlines
    return served.value, outlines


# -- arcs ----------------------------------------------------------------------------------------


def arc_points(a: NodeBox, b: NodeBox, room: float, offset: float = 0.0
               ) -> tuple[list[float], list[float]]:
    """A quadratic curve from `a` to `b`: left of the column, bulging with the distance (up to
    `room` pixels), when both are in one column; else a gentle bow between facing sides."""
    if a.column == b.column:
        x0, y0, x1, y1 = a.left, a.y, b.left, b.y
        span = abs(y1 - y0)
        room = max(room, 12.0)
        bulge = 6.0 + (room - 6.0) * (1 - math.exp(-span / (6 * ROW_PX))) - offset
        cx, cy = min(x0, x1) - 2 * max(bulge, 4.0), (y0 + y1) / 2
    else:
        x0, x1 = (a.right, b.left) if a.x < b.x else (a.left, b.right)
        y0, y1 = a.y, b.y
        dx, dy = x1 - x0, y1 - y0
        length = math.hypot(dx, dy) or 1.0
        bend = 0.12 * length + 8.0 + offset
        cx, cy = (x0 + x1) / 2 - dy / length * bend, (y0 + y1) / 2 + dx / length * bend
    xs, ys = [], []
    for i in range(ARC_POINTS):
        t = i / (ARC_POINTS - 1)
        xs.append((1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t * t * x1)
        ys.append((1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t * t * y1)
    return xs, ys


def arrow_points(xs: Sequence[float], ys: Sequence[float], size: float = 7.0
                 ) -> tuple[list[float], list[float]]:
    """An arrowhead at the end of a curve, padded to `ARC_POINTS` points."""
    dx, dy = xs[-1] - xs[-2], ys[-1] - ys[-2]
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length
    wings = []
    for angle in (0.45, -0.45):
        c, s = math.cos(angle), math.sin(angle)
        wings.append((xs[-1] - size * (ux * c - uy * s), ys[-1] - size * (ux * s + uy * c)))
    px = [wings[0][0], xs[-1], wings[1][0]]
    py = [wings[0][1], ys[-1], wings[1][1]]
    return px + [px[-1]] * (ARC_POINTS - 3), py + [py[-1]] * (ARC_POINTS - 3)


def outline_points(box: NodeBox, grow: float) -> tuple[list[float], list[float]]:
    """A closed rectangle around a box, padded to `ARC_POINTS` points."""
    left, right = box.left - grow, box.right + grow
    top, bottom = box.top - grow, box.bottom + grow
    px = [left, right, right, left, left]
    py = [top, top, bottom, bottom, top]
    return px + [left] * (ARC_POINTS - 5), py + [top] * (ARC_POINTS - 5)


# -- details ---------------------------------------------------------------------------------------


def _names(graph: RoutingGraph, names: Iterable[str], down: DownSet, served: str | None = None
           ) -> str:
    """Names of a chain: struck through when they fail with `down` down, bold when serving."""
    parts = []
    for name in names:
        group = graph.resolve(name)
        text = esc(name) + ("" if group else " [nothing serves it]")
        if group is not None and graph.outcome(name, down)[0] is not None:
            parts.append(f'<span class="aidash-routing-down">{text}</span>')
        elif served is not None and group == served:
            parts.append(f'<span class="aidash-routing-served">{text}</span>')
        else:
            parts.append(text)
    return " → ".join(parts)


def chain_html(graph: RoutingGraph, name: str, what_if: WhatIf) -> str:
    """The fallback chain of a gateway name for each kind of failure, one line each."""
    route = what_if.routes.get(name)
    served = route.served_by if route is not None else None
    lines = []
    for kind in FailureKind:
        attempts = graph.expanded_chain(name, kind)[1:]
        setting = graph.chain_setting(kind)
        if not attempts:
            if kind is FailureKind.GENERAL or setting == kind.setting:
                lines.append(f'<div class="aidash-routing-chain" data-kind="{kind.value}">'
                             f"on {kind.words} error: no fallback</div>")
            continue
        note = "" if setting == kind.setting else f" <small>(from {esc(setting)})</small>"
        lines.append(f'<div class="aidash-routing-chain" data-kind="{kind.value}">on '
                     f"{kind.words} error{note}: "
                     f"{_names(graph, [a.name for a in attempts], what_if.down, served)}</div>")
    return "".join(lines)


def route_html(graph: RoutingGraph, name: str, what_if: WhatIf, *, heading: str) -> str:
    """Where requests for `name` go under `what_if`, as one line."""
    route = what_if.routes.get(name)
    if route is None:
        return ""
    tried = [a.name for a in route.attempts if a.failure is not None]
    if route.lost:
        text = (f'<span class="aidash-routing-lost">loses service</span> (tried '
                f"{esc(', '.join(tried))})")
    elif route.rerouted:
        text = (f'goes to <span class="aidash-routing-served">{esc(route.served_by)}</span> '
                f"[{esc(', '.join(route.deployments))}] after {esc(', '.join(tried))}")
    else:
        text = f"served by {esc(route.served_by)} [{esc(', '.join(route.deployments))}]"
    return (f'<div class="aidash-routing-whatif-result" data-name="{esc(name)}" '
            f'data-served-by="{esc(route.served_by or "")}" data-lost="{str(route.lost).lower()}">'
            f"<b>{esc(heading)}</b>: {text}</div>")


def summary_html(what_if: WhatIf, marked: Sequence[str], now: WhatIf) -> str:
    """What the what-if (or, with nothing marked, the live state) means for every name."""
    if marked:
        lost, rerouted = what_if.lost, what_if.rerouted
        head = f"<b>What if</b> {esc(', '.join(marked))} {'is' if len(marked) == 1 else 'are'} down"
    else:
        lost, rerouted = now.lost, now.rerouted
        head = "<b>Now</b> (deployments in outage or cooled down taken as down)"
    rows = [f'<div data-lost="{esc(",".join(lost))}" data-rerouted="{esc(",".join(rerouted))}"'
            f' class="aidash-routing-summary">{head}:']
    rows.append('<div class="aidash-routing-lost">lose service: '
                f"{esc(', '.join(lost)) if lost else 'none'}</div>")
    routes = what_if.routes if marked else now.routes
    if rerouted:
        rows.append("<div>rerouted: " + ", ".join(
            f"{esc(n)} → {esc(routes[n].served_by)}" for n in rerouted) + "</div>")
    else:
        rows.append("<div>rerouted: none</div>")
    rows.append("</div>")
    return "".join(rows)


# -- the panel -------------------------------------------------------------------------------------


class RoutingPanel(PanelBase):
    """The routing graph drawn live, with details on click and a what-if of nodes marked down.

    `graph` defaults to the routing files the settings name (`aidash routes`' defaults). The
    picture is drawn at once (states unknown) and filled in by `refresh(view)`.
    """

    css_class = "aidash-routing"
    title = "Routing"
    min_refresh_s = 15.0

    def __init__(
        self,
        graph: RoutingGraph | None = None,
        history: History | None = None,
        settings: Settings | None = None,
        *,
        title: str | None = None,
    ) -> None:
        super().__init__(history, settings, title=title)
        self.load_problem: str | None = None
        if graph is None:
            graph = self._load_graph()
        self.graph = graph
        self.layout_ = layout_graph(graph)
        self.reading = LiveReading()
        self.live: LiveGraph = overlay(graph, {}, {})
        self.marked: tuple[str, ...] = ()
        self.selected: str | None = None
        self.what_if: WhatIf = self.live.now
        self.picture: Picture | None = None
        self._graph_signature: Any = None
        self._syncing = False

        width, height = self.layout_.width, self.layout_.height
        self.x_scale = bq.LinearScale(min=0.0, max=width, allow_padding=False)
        self.y_scale = bq.LinearScale(min=0.0, max=height, allow_padding=False, reverse=True)
        self.link_scale = bq.ColorScale(colors=[LINK_COLOURS[r] for r in LINK_ROLES],
                                        min=0, max=len(LINK_ROLES) - 1)
        scales = {"x": self.x_scale, "y": self.y_scale}
        self.arc_marks = [
            bq.Lines(x=[[0.0, 0.0]], y=[[0.0, 0.0]], scales=scales, stroke_width=w,
                     line_style="dashed", visible=False, interactions={})
            for w in ARC_WIDTHS
        ]
        self.arrow_mark = bq.Lines(x=[[0.0, 0.0]], y=[[0.0, 0.0]], scales=scales,
                                   stroke_width=1.5, visible=False, interactions={})
        self.outline_marks = {
            name: bq.Lines(x=[[0.0, 0.0]], y=[[0.0, 0.0]], scales=scales, stroke_width=w,
                           colors=[colour], line_style="dashed" if dashed else "solid",
                           visible=False, interactions={})
            for name, (colour, w, dashed) in OUTLINES.items()
        }
        self.node_tooltip = bq.Tooltip(fields=["name", "state"], labels=["", "state"])
        self.graph_mark = self._new_graph_mark([], [], [])
        self.figure = bq.Figure(
            marks=self._marks(), fig_margin={"top": 0, "bottom": 0, "left": 0, "right": 0},
            animation_duration=0, min_aspect_ratio=0.001, max_aspect_ratio=1000,
            display_toolbar=False,
            layout=widgets.Layout(width=f"{width:.0f}px", height=f"{height:.0f}px",
                                  flex="0 0 auto"),
        )
        self.columns_html = widgets.HTML(self._columns_html()).add_class("aidash-routing-columns")
        self.columns_html.layout = widgets.Layout(width=f"{width:.0f}px", height="18px",
                                                  flex="0 0 auto")
        self.canvas = widgets.Box(
            [self.columns_html, self.figure],
            layout=widgets.Layout(display="flex", flex_flow="column", overflow="auto",
                                  max_height=f"{CANVAS_MAX_H}px", min_width="0",
                                  flex="0 1 auto"),
        ).add_class("aidash-routing-canvas")
        self.summary = widgets.HTML("").add_class("aidash-routing-overview")
        self.down_select = widgets.SelectMultiple(
            options=self._down_options(), value=(), rows=8,
            layout=widgets.Layout(width="290px"),
        )
        self.clear_button = widgets.Button(description="Clear", icon="times",
                                           layout=widgets.Layout(width="90px"))
        self.clear_button.add_class("aidash-routing-clear")
        self.whatif = widgets.VBox([
            widgets.HTML("<b>What if…</b> mark down (ctrl/shift-click for several):"),
            self.down_select, self.clear_button,
        ]).add_class("aidash-routing-whatif")
        self.toggle_button = widgets.Button(description="Mark down", icon="ban",
                                            layout=widgets.Layout(width="150px"))
        self.toggle_button.add_class("aidash-routing-toggle")
        self.toggle_button.layout.display = "none"
        self.detail = widgets.HTML("").add_class("aidash-routing-detail")
        self.detail.layout = widgets.Layout(width="290px")
        self.legend = widgets.HTML(legend_html()).add_class("aidash-routing-legend")
        side = widgets.VBox([self.whatif, self.toggle_button, self.detail],
                            layout=widgets.Layout(margin="0 0 0 10px", flex="0 0 300px"))
        self.body.children = [
            widgets.HTML(STYLE), self.summary,
            widgets.HBox([self.canvas, side], layout=widgets.Layout(align_items="flex-start")),
            self.legend,
        ]
        self.down_select.observe(self._down_chosen, names="value")
        self.clear_button.on_click(lambda _button: self.mark_down(()))
        self.toggle_button.on_click(self._toggle_selected)
        self._render()

    # -- public --------------------------------------------------------------------------------

    @property
    def node_ids(self) -> tuple[str, ...]:
        """The node ids in the order of the `Graph` mark's nodes (and of `g.node` in the page)."""
        return tuple(box.node_id for box in self.layout_.boxes)

    def select(self, node: str | None) -> None:
        """Show the details and fallback chain of a node (an id `kind:name`, or a bare name of
        a group, deployment or provider); None shows the overview."""
        key = self._node_key(node) if node else None
        if key == self.selected:
            return
        self.selected = key
        self._render()

    def mark_down(self, names: Iterable[str]) -> None:
        """Mark deployments, providers or groups (by name or node id) as down for the what-if;
        an empty list clears it. `ValueError` for names the graph does not know."""
        wanted = []
        for name in names:
            bare = name.split(":", 1)[1] if ":" in name and name not in self._known() else name
            if bare not in self._known():
                raise ValueError(f"{name!r} is no deployment, provider or group of the graph")
            if bare not in wanted:
                wanted.append(bare)
        if tuple(wanted) == self.marked:
            return
        self.marked = tuple(wanted)
        self._sync_select()
        self._render()

    # -- refreshing -------------------------------------------------------------------------------

    async def _update(self, view: DashboardView) -> None:
        start, end = view.window()
        self.reading = await read_live(self.history, self.graph, start, end)
        self.live = overlay(self.graph, self.reading.states, self.reading.traffic,
                            self.reading.fallbacks)
        if self.load_problem:
            self.problem(self.load_problem)
        listed = self.reading.gateway_deployments
        if listed is not None:
            extra = sorted(set(listed) - set(self.graph.deployments))
            if extra:
                more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
                self.problem(f"the gateway has deployments the routing config does not list: "
                             f"{', '.join(extra[:3])}{more}")
        self._render()

    # -- drawing ----------------------------------------------------------------------------------

    def _render(self) -> None:
        down = set(self.marked) | {key for key, d in self.live.deployments.items()
                                   if not d.state.serving}
        self.what_if = self.graph.what_if(self.graph.down_set(sorted(down)))
        picture = build_picture(self.graph, self.live, self.what_if, self.marked,
                                self.selected)
        self.picture = picture
        self._draw(picture)
        self.summary.value = self._summary_line()
        self.detail.value = self._detail_html()
        kind, _, name = (self.selected or "").partition(":")
        if kind in ("deployment", "provider", "group"):
            self.toggle_button.description = "Mark up" if name in self.marked else "Mark down"
            self.toggle_button.layout.display = ""
        else:
            self.toggle_button.layout.display = "none"

    def _draw(self, picture: Picture) -> None:
        boxes = self.layout_.boxes
        index = {b.node_id: i for i, b in enumerate(boxes)}
        colours = [picture.node(b.node_id).fill for b in boxes]
        links = [
            {"source": index[e.edge.source], "target": index[e.edge.target],
             "value": LINK_ROLES.index(e.role), "link_width": round(e.width * 4) / 4}
            for e in picture.edges if not e.dashed
        ]
        nodes = [
            {"label": b.label, "name": b.name,
             "state": STATE_WORDS[picture.node(b.node_id).state], "shape": "rect",
             "shape_attrs": {"width": round(b.width, 1), "height": b.height,
                             "rx": _ROUNDING[b.kind], "ry": _ROUNDING[b.kind]}}
            for b in boxes
        ]
        signature = (colours, links)
        if signature != self._graph_signature:
            self._graph_signature = signature
            old = self.graph_mark
            self.graph_mark = self._new_graph_mark(nodes, links, colours)
            if getattr(self, "figure", None) is not None:
                self.figure.marks = self._marks()
                old.unobserve(self._node_clicked, names="selected")
                old.close()
        self._draw_arcs(picture)
        self._draw_outlines(picture)

    def _new_graph_mark(self, nodes: list[dict[str, Any]], links: list[dict[str, Any]],
                        colours: list[str]) -> bq.Graph:
        boxes = self.layout_.boxes
        mark = bq.Graph(
            node_data=nodes, link_data=links, colors=colours or ["#e8ebef"],
            x=[b.x for b in boxes], y=[b.y for b in boxes],
            scales={"x": self.x_scale, "y": self.y_scale, "link_color": self.link_scale},
            link_type="line", directed=False, highlight_links=True,
            interactions={"click": "select", "hover": "tooltip"}, tooltip=self.node_tooltip,
            static=True, charge=0,
        )
        mark.observe(self._node_clicked, names="selected")
        return mark

    def _marks(self) -> list[bq.Mark]:
        return [*self.arc_marks, self.arrow_mark, self.graph_mark, *self.outline_marks.values()]

    def _draw_arcs(self, picture: Picture) -> None:
        buckets: dict[float, tuple[list[Any], list[Any], list[str], list[float]]] = {
            w: ([], [], [], []) for w in ARC_WIDTHS}
        arrows: tuple[list[Any], list[Any], list[str], list[float]] = ([], [], [], [])
        seen: dict[tuple[str, str], int] = {}
        for style in picture.edges:
            if not style.dashed:
                continue
            a = self.layout_.box(style.edge.source)
            b = self.layout_.box(style.edge.target)
            pair = (style.edge.source, style.edge.target)
            offset = 5.0 * seen.get(pair, 0)
            seen[pair] = seen.get(pair, 0) + 1
            xs, ys = arc_points(a, b, self.layout_.lanes.get(b.column, 20.0), offset)
            bucket = buckets[min(ARC_WIDTHS, key=lambda w: abs(w - style.width))]
            bucket[0].append(xs)
            bucket[1].append(ys)
            bucket[2].append(style.colour)
            faded = self.selected is not None and self.selected not in pair \
                and style.role != "what_if"
            bucket[3].append(0.2 if faded else 1.0)
            ax, ay = arrow_points(xs, ys)
            arrows[0].append(ax)
            arrows[1].append(ay)
            arrows[2].append(style.colour)
            arrows[3].append(0.2 if faded else 1.0)
        for mark, width in zip(self.arc_marks, ARC_WIDTHS, strict=True):
            _set_lines(mark, *buckets[width])
        _set_lines(self.arrow_mark, *arrows)

    def _draw_outlines(self, picture: Picture) -> None:
        for name, mark in self.outline_marks.items():
            grow = 4.0 if name == "selected" else 2.5
            xs, ys = [], []
            for style in picture.nodes:
                if name in style.outlines:
                    px, py = outline_points(self.layout_.box(style.node_id), grow)
                    xs.append(px)
                    ys.append(py)
            _set_lines(mark, xs, ys, [OUTLINES[name][0]] * len(xs))

    def _columns_html(self) -> str:
        spans = "".join(
            f'<span style="left:{x:.0f}px">{esc(COLUMN_NAMES[c])}</span>'
            for c, (x, _w) in sorted(self.layout_.columns.items())
        )
        return f'<div style="position:relative;height:18px">{spans}</div>'

    def _summary_line(self) -> str:
        g = self.graph
        errors = len(g.errors)
        warnings = len(g.problems) - errors
        when = (f", states as of {fmt_when(self.reading.state_time_s)}"
                if self.reading.state_time_s else ", no deployment states in the store yet")
        problems = ""
        if g.problems:
            problems = (f' · <span class="{"aidash-critical" if errors else "aidash-warn"}">'
                        f"{errors} error{'s' if errors != 1 else ''}, {warnings} warning"
                        f"{'s' if warnings != 1 else ''} in the routing config</span>")
        return (f'<div class="aidash-note">{len(g.groups)} groups · {len(g.deployments)} '
                f"deployments · {len(g.providers)} providers · {len(g.aliases)} aliases · "
                f"{len(g.mappings)} mappings{esc(when)}{problems}</div>")

    def _detail_html(self) -> str:
        overview = summary_html(self.what_if, self.marked, self.live.now)
        if self.selected is None:
            ranked = sorted(self.graph.problems, key=lambda p: p.severity is not Severity.ERROR)
            problems = "".join(f"<li>{esc(_clip(str(p), 180))}</li>" for p in ranked[:5])
            more = len(ranked) - 5
            tail = f"<li>… {more} more (`aidash check`)</li>" if more > 0 else ""
            problem_list = f"<b>Problems</b><ul>{problems}{tail}</ul>" if problems else ""
            return (f"{overview}<p class='aidash-note'>Click a node for its details and "
                    f"fallback chain.</p>{problem_list}")
        detail = node_detail(self.graph, self.selected, self.live, self.what_if, self.marked)
        return detail + overview if self.marked else detail

    # -- events ----------------------------------------------------------------------------------

    def _node_clicked(self, change: Mapping[str, Any]) -> None:
        chosen = change.get("new")
        if not chosen:
            self.select(None)
            return
        self.select(self.layout_.boxes[int(chosen[-1])].node_id)

    def _down_chosen(self, change: Mapping[str, Any]) -> None:
        if self._syncing:
            return
        self.mark_down(change.get("new") or ())

    def _toggle_selected(self, _button: Any) -> None:
        if not self.selected:
            return
        name = self.selected.split(":", 1)[1]
        if name in self.marked:
            self.mark_down([m for m in self.marked if m != name])
        else:
            self.mark_down([*self.marked, name])

    def _sync_select(self) -> None:
        offered = {value for _label, value in self.down_select.options}
        value = tuple(m for m in self.marked if m in offered)
        if tuple(self.down_select.value) != value:
            self._syncing = True
            try:
                self.down_select.value = value
            finally:
                self._syncing = False

    # -- helpers ---------------------------------------------------------------------------------

    def _load_graph(self) -> RoutingGraph:
        try:
            paths = routing_files(self.settings)
            if not paths:
                self.load_problem = "no routing files found (the settings' routing: section)"
                return build_graph()
            return load_graph(paths)
        except UnusableInput as exc:
            self.load_problem = str(exc)
            return build_graph()

    def _known(self) -> set[str]:
        g = self.graph
        return set(g.deployments) | set(g.providers) | set(g.groups)

    def _node_key(self, node: str) -> str:
        if node in self.layout_.positions:
            return node
        for kind in (NodeKind.GROUP, NodeKind.DEPLOYMENT, NodeKind.PROVIDER, NodeKind.ALIAS,
                     NodeKind.MAPPING, NodeKind.MISSING):
            key = node_id(kind, node)
            if key in self.layout_.positions:
                return key
        raise ValueError(f"{node!r} is no node of the routing graph")

    def _down_options(self) -> list[tuple[str, str]]:
        """The what-if choices, (label, name): providers, groups, then deployments."""
        g = self.graph
        options = [(f"provider · {p}", p) for p in g.providers]
        options += [(f"group · {n}", n) for n in g.groups if n not in g.providers]
        options += [(f"deployment · {short_label(g, NodeKind.DEPLOYMENT, d)}", d)
                    for d in g.deployments if d not in g.providers and d not in g.groups]
        return options


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _set_lines(mark: bq.Lines, xs: list[list[float]], ys: list[list[float]],
               colours: list[str], opacities: list[float] | None = None) -> None:
    """Give a multi-line mark its lines (hidden when there are none), in one message."""
    with mark.hold_sync():
        if xs:
            mark.x, mark.y = xs, ys
            mark.colors = colours
            mark.opacities = opacities or [1.0]
            mark.visible = True
        else:
            mark.visible = False
            mark.x, mark.y = [[0.0, 0.0]], [[0.0, 0.0]]


def node_detail(graph: RoutingGraph, key: str, live: LiveGraph, what_if: WhatIf,
                marked: Sequence[str]) -> str:
    """The details of one node: what it is, its state and traffic, its fallback chains and
    where its requests go under the what-if."""
    kind, _, name = key.partition(":")
    heading = "what if" if marked else "now"
    rows: list[tuple[str, str]] = []
    extra = ""
    if kind == NodeKind.GROUP.value:
        group = graph.groups[name]
        state = live.groups.get(name, LiveState.UNKNOWN).value
        total = sum(live.deployments[d].traffic for d in group.deployment_ids)
        rows += [("state", STATE_WORDS[state]), ("requests in window", fmt_number(total)),
                 ("deployments", ", ".join(group.deployment_ids) or "none")]
        aliases = [a.name for a in graph.aliases.values() if graph.resolve(a.name) == name]
        if aliases:
            rows.append(("aliases", ", ".join(aliases)))
        extra = chain_html(graph, name, what_if) + route_html(graph, name, what_if,
                                                              heading=heading)
    elif kind == NodeKind.DEPLOYMENT.value:
        d = graph.deployments[name]
        item = live.deployments[name]
        rows += [("state", STATE_WORDS[item.state.value]), ("group", d.group),
                 ("model", d.model), ("provider", d.provider), ("api_base", d.api_base or "–"),
                 ("requests in window", fmt_number(item.traffic))]
        if d.order is not None:
            rows.append(("order", str(d.order)))
        if d.id_source == "litellm":
            rows.append(("id", "LiteLLM's generated id" + ("" if d.id_exact else
                                                           " (depends on unset variables)")))
        alone = graph.what_if(graph.down_set(sorted({*what_if.down.deployments, name})))
        extra = chain_html(graph, d.group, what_if) + route_html(
            graph, d.group, what_if, heading=f"requests for {d.group}, {heading}") + route_html(
            graph, d.group, alone, heading="if this deployment is down too")
    elif kind == NodeKind.PROVIDER.value:
        p = graph.providers[name]
        members = graph.provider_deployments(name)
        rows += [("state", STATE_WORDS[live.providers.get(name, LiveState.UNKNOWN).value]),
                 ("type", p.type), ("base URL", p.base_url or "–"),
                 ("deployments", ", ".join(members) or "none"),
                 ("defined in", "providers file" if p.defined else "implied by deployments")]
        alone = graph.what_if(graph.down_set(sorted({*what_if.down.deployments, name})))
        lost = [n for n in alone.lost if n not in what_if.lost]
        moved = [n for n in alone.rerouted if n not in what_if.rerouted]
        extra = (f'<div class="aidash-routing-whatif-result" data-lost="{esc(",".join(lost))}">'
                 f"<b>if this provider is down</b>: lose service: "
                 f"{esc(', '.join(lost)) or 'none'}; rerouted: "
                 + (", ".join(f"{esc(n)} → {esc(alone.routes[n].served_by)}" for n in moved)
                    or "none") + "</div>")
    elif kind == NodeKind.ALIAS.value:
        alias = graph.aliases[name]
        rows += [("target", alias.target), ("group", graph.resolve(name) or "nothing"),
                 ("hidden", "yes" if alias.hidden else "no")]
        extra = chain_html(graph, name, what_if) + route_html(graph, name, what_if,
                                                              heading=heading)
    elif kind == NodeKind.MAPPING.value:
        mapping = graph.mappings[name]
        rows += [("targets", ", ".join(t.label for t in mapping.targets)),
                 ("fallbacks", ", ".join(mapping.fallbacks) or "none")]
        if mapping.description:
            rows.append(("description", mapping.description))
        extra = route_html(graph, name, what_if, heading=heading)
    else:
        pointing = sorted({e.source.split(":", 1)[1] for e in graph.edges() if e.target == key})
        rows += [("referenced by", ", ".join(pointing) or "–"),
                 ("problem", "no model group, alias or wildcard group serves this name")]
    table = "".join(f"<tr><td class='aidash-muted'>{esc(k)}</td><td>{esc(v)}</td></tr>"
                    for k, v in rows)
    return (f'<div data-node="{esc(key)}"><h4>{esc(kind)} {esc(name)}</h4>'
            f'<table class="aidash-table">{table}</table>{extra}</div>')


def _swatch(fill: str, stroke: str = "#57606a", dash: str = "", width: float = 1.0) -> str:
    dashing = f' stroke-dasharray="{dash}"' if dash else ""
    return (f'<svg width="22" height="12"><rect x="2" y="2" width="18" height="8" rx="2" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="{width}"{dashing}/></svg>')


def _line(colour: str, width: float, dash: str = "") -> str:
    dashing = f' stroke-dasharray="{dash}"' if dash else ""
    return (f'<svg width="28" height="12"><line x1="1" y1="6" x2="27" y2="6" stroke="{colour}" '
            f'stroke-width="{width}"{dashing}/></svg>')


def legend_html() -> str:
    """What the fills, outlines, lines and arcs mean."""
    states = "".join(f'<span data-state="{s}">{_swatch(STATE_FILL[s])}{esc(STATE_WORDS[s])}'
                     "</span>" for s in ("healthy", "partial", "outage", "cooled_down",
                                         "unknown", "down"))
    outlines = "".join(
        f'<span data-outline="{name}">{_swatch("#fff", c, "3,2" if dashed else "", w)}'
        f"{esc(OUTLINE_WORDS[name])}</span>"
        for name, (c, w, dashed) in OUTLINES.items())
    routes = (f"{_line(LINK_COLOURS['active'], 4)}route, width by requests in the window"
              f"{_line(LINK_COLOURS['idle'], 1)}no traffic"
              f"{_line(LINK_COLOURS['no_figure'], 1.3)}alias / mapping target"
              f"{_line(LINK_COLOURS['down'], 1.5)}to a node that is down"
              f"{_line(LINK_COLOURS['rerouted'], 3)}takes rerouted traffic")
    arcs = "".join(f"{_line(c, 2, '6,4')}fallback on {esc(k.words)} error"
                   for k, c in FALLBACK_COLOURS.items())
    arcs += (f"{_line(MAPPING_FALLBACK_COLOUR, 2, '6,4')}mapping fallback"
             f"{_line(WHAT_IF_COLOUR, 3, '6,4')}where traffic goes instead")
    return (f'<div class="aidash-legend"><div>{states}</div><div>{outlines}</div>'
            f"<div>{routes}</div><div>{arcs}</div>"
            f'<div class="aidash-muted">Columns: mappings, aliases, model groups, deployments,'
            f" providers. Hover a node to bring out its routes.</div></div>")


__all__ = [
    "EdgeStyle", "LiveReading", "NodeBox", "NodeStyle", "Picture", "RoutingLayout",
    "RoutingPanel", "build_picture", "fallbacks_taken", "layout_graph", "legend_html",
    "read_live",
]
