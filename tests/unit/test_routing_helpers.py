"""Helpers for the routing tests (no tests here): YAML snippets, graphs, problems."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from pathlib import Path

from aidash_lib.routing import RoutingGraph, load_graph
from aidash_lib.yamlfile import Problem


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def graph_of(
    folder: Path, litellm: str | None = None, providers: str | None = None,
    mappings: str | None = None, environ: Mapping[str, str] | None = None,
) -> RoutingGraph:
    paths = [write(folder, name, text) for name, text in (
        ("proxy.yaml", litellm), ("providers.yaml", providers), ("mappings.yaml", mappings),
    ) if text is not None]
    return load_graph(paths, environ=environ if environ is not None else {})


def problems_with(graph: RoutingGraph, text: str) -> list[Problem]:
    return [p for p in graph.problems if text in p.message]


def deployment(group: str, deployment_id: str, model: str = "openai/gpt-4o-mini",
               extra: str = "") -> str:
    """One model_list item (indented for `model_list:`)."""
    lines = [
        f"  - model_name: {json.dumps(group)}",
        "    litellm_params:",
        f"      model: {model}",
        *(f"      {line}" for line in extra.splitlines() if line.strip()),
        "    model_info:",
        f"      id: {deployment_id}",
    ]
    return "\n".join(lines) + "\n"
