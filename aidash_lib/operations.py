"""Editing routes from a notebook (`notebooks/operations.ipynb`): the steps an operator takes on
the gateway's LiteLLM config, on top of `configs` (which validates, keeps comments, writes
atomically and keeps the previous version)::

    editor = RoutingEditor.open(settings)              # the files the settings' routing: names
    editor.set_fallbacks("qwen2.5-coder", ["gpt-4o-mini", "llama3.1-8b"])
    editor.add_deployment("llama3.1-8b", "hosted_vllm/meta-llama/Llama-3.1-8B-Instruct",
                          "llama3.1-8b-vllm-2", api_base="http://10.0.0.6:8000/v1")
    editor.remove_deployment("gpt-4o-openai")
    edit = editor.preview()     # edit.problems, edit.diff, edit.graph()
    saved = editor.save()       # refuses problems of the error kind (`ConfigRejected`)

Edits change ruamel's round-trip tree in place, so the comments and key order of the file stay;
a new deployment goes after the last one of its group (or at the end), taking over the comment
lines that followed it. Saving is allowed only inside the settings file's folder, and records a
`config_save` event in the store when there is one (for postmortems).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from aidash_lib.configs import (
    ConfigEdit,
    EditableConfig,
    SavedConfig,
    attach_trailing,
    open_config,
    remove_item,
    save_edit,
    trailing_slot,
)
from aidash_lib.routing import (
    ENV_PREFIX,
    FailureKind,
    RoutingGraph,
    document_kind,
    litellm_deployment_id,
    load_graph,
    routing_files,
)
from aidash_lib.settings import REPO_CONFIG, Settings, load_settings
from aidash_lib.yamlfile import Severity, load_yaml, plain

log = logging.getLogger(__name__)


class EditError(ValueError):
    """An edit that cannot be made as asked (an unknown group or deployment, a duplicate id)."""


class RoutingEditor:
    """The gateway's LiteLLM config open for editing, with its providers and mappings files as
    companions (checked together, as `aidash check` does)."""

    def __init__(self, config: EditableConfig, companions: Sequence[Path] = (),
                 *, root: Path | None = None, store_path: Path | None = None) -> None:
        self.config = config
        self.companions = tuple(companions)
        self.root = root
        self.store_path = store_path
        self.before = load_graph([config.path, *self.companions])

    @classmethod
    def open(cls, settings: Settings | None = None,
             files: Iterable[str | Path] | None = None) -> RoutingEditor:
        """Open the LiteLLM config among `files` (default: the settings' routing files);
        saving is then allowed inside the settings file's folder only."""
        settings = settings or load_settings()
        paths = [Path(p) for p in files] if files is not None else routing_files(settings)
        litellm = [p for p in paths if document_kind(load_yaml(p)) == "litellm"]
        if not litellm:
            raise EditError("no LiteLLM config among " + ", ".join(map(str, paths)))
        root = Path(settings.source_path).parent if settings.source_path else REPO_CONFIG.parent
        return cls(open_config(litellm[0]), [p for p in paths if p != litellm[0]],
                   root=root, store_path=settings.store_path)

    @property
    def path(self) -> Path:
        return self.config.path

    @property
    def data(self) -> Any:
        return self.config.data

    # -- fallbacks -----------------------------------------------------------------------------

    def fallbacks(self, group: str, kind: FailureKind | str = FailureKind.GENERAL) -> list[str]:
        """The fallback list written for `group` (not the default one), as it stands now."""
        item = self._rule(group, FailureKind(kind))
        return list(item[group]) if item is not None else []

    def set_fallbacks(self, group: str, targets: Sequence[str],
                      kind: FailureKind | str = FailureKind.GENERAL) -> None:
        """Give `group` these fallbacks, in this order (to reorder, give the same names in a
        new order); an empty list removes its entry."""
        kind = FailureKind(kind)
        if group not in self._names():
            raise EditError(f"{group!r} is no model group or alias of {self.path.name}")
        section, items = self._rule_list(kind, create=bool(targets))
        index = next((i for i, item in enumerate(items or [])
                      if isinstance(item, dict) and group in item), None)
        if not targets:
            if items is not None and index is not None:
                remove_item(items, index)
            return
        assert items is not None
        if index is None:
            entry = CommentedSeq(list(targets))
            entry.fa.set_flow_style()
            items.append(CommentedMap({group: entry}))
            return
        current = items[index][group]
        if isinstance(current, CommentedSeq):
            current[:] = list(targets)
        else:
            entry = CommentedSeq(list(targets))
            entry.fa.set_flow_style()
            items[index][group] = entry
        log.debug("%s.%s: %s -> %s", section, kind.setting, group, list(targets))

    # -- deployments ------------------------------------------------------------------------

    def add_deployment(self, group: str, model: str, deployment_id: str, *,
                       api_base: str | None = None, **params: Any) -> None:
        """Add a deployment to `group` (a new group if none has that name), after the group's
        last deployment; `params` are more `litellm_params` (e.g. `api_key="os.environ/X"`)."""
        if deployment_id in self.deployment_ids():
            raise EditError(f"a deployment with id {deployment_id!r} exists already")
        model_list = self.data.get("model_list")
        if not isinstance(model_list, list):
            raise EditError(f"{self.path.name} has no model_list")
        litellm_params = CommentedMap({"model": model})
        if api_base:
            litellm_params["api_base"] = api_base
        litellm_params.update(params)
        entry = CommentedMap({
            "model_name": group, "litellm_params": litellm_params,
            "model_info": CommentedMap({"id": deployment_id}),
        })
        members = [i for i, item in enumerate(model_list)
                   if isinstance(item, dict) and item.get("model_name") == group]
        insert_item(model_list, (members[-1] + 1) if members else len(model_list), entry)

    def remove_deployment(self, deployment_id: str) -> Any:
        """Remove a deployment by id (its `model_info.id`, or LiteLLM's generated id); the
        comment lines after it stay. Returns the entry removed."""
        ids = self.deployment_ids()
        if deployment_id not in ids:
            raise EditError(f"no deployment with id {deployment_id!r} in {self.path.name}")
        return remove_item(self.data["model_list"], ids.index(deployment_id))

    def deployment_ids(self) -> list[str]:
        """The id of each `model_list` entry, in order ("" for an entry without a model)."""
        ids = []
        for item in self.data.get("model_list") or []:
            info = item.get("model_info") if isinstance(item, dict) else None
            params = item.get("litellm_params") if isinstance(item, dict) else None
            if isinstance(info, dict) and info.get("id") is not None:
                ids.append(str(info["id"]))
            elif isinstance(params, dict) and isinstance(item.get("model_name"), str):
                resolved = {k: _resolve(v) for k, v in plain(params).items()}
                ids.append(litellm_deployment_id(item["model_name"], resolved))
            else:
                ids.append("")
        return ids

    # -- preview and save -------------------------------------------------------------------

    def preview(self) -> ConfigEdit:
        """The edited text checked with the companion files: problems, diff, `graph()`."""
        return self.config.preview(self.companions)

    def save(self, *, record: bool = True) -> SavedConfig:
        """Save the edit (validated, atomic, the previous version kept); `ConfigRejected` when
        it has problems of the error kind, `ConfigConflict` when the file changed since it was
        opened. The editor then continues from the saved text."""
        edit = self.preview()
        saved = save_edit(edit, root=self.root)
        if record and self.store_path is not None:
            record_save(self.store_path, saved)
        self.config = open_config(self.path)
        self.before = load_graph([self.path, *self.companions])
        return saved

    # -- helpers ------------------------------------------------------------------------------

    def _names(self) -> set[str]:
        names = {str(i.get("model_name")) for i in self.data.get("model_list") or []
                 if isinstance(i, dict)}
        router = self.data.get("router_settings") or {}
        aliases = router.get("model_group_alias") if isinstance(router, dict) else None
        return names | set(aliases or {})

    def _rule_list(self, kind: FailureKind, *, create: bool) -> tuple[str, Any]:
        """The section holding the list for `kind` (router_settings unless only
        litellm_settings sets it) and the list, created in router_settings if asked."""
        for section in ("router_settings", "litellm_settings"):
            values = self.data.get(section)
            if isinstance(values, dict) and values.get(kind.setting):
                return section, values[kind.setting]
        if not create:
            return "router_settings", None
        if not isinstance(self.data.get("router_settings"), dict):
            self.data["router_settings"] = CommentedMap()
        router = self.data["router_settings"]
        router[kind.setting] = CommentedSeq()
        return "router_settings", router[kind.setting]

    def _rule(self, group: str, kind: FailureKind) -> Any:
        _, items = self._rule_list(kind, create=False)
        for item in items or []:
            if isinstance(item, dict) and group in item:
                return item
        return None


def insert_item(items: CommentedSeq, index: int, item: Any) -> None:
    """Insert `item` at `index`, moving the comment lines that followed the item before it
    (the heading of the next block, in ruamel's tree) to after the new one."""
    if index > 0:
        slot = trailing_slot(items[index - 1])
        if slot is not None:
            token = slot[0][slot[1]]
            first, newline, rest = token.value.partition("\n")
            if rest.strip():
                token.value = first + newline
                items.insert(index, item)
                moved = type(token)("\n" + rest, token.start_mark, None)
                attach_trailing(items[index], moved)
                return
    items.insert(index, item)


def _resolve(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        return os.environ.get(value[len(ENV_PREFIX):])
    return value


def record_save(store_path: Path, saved: SavedConfig) -> bool:
    """A `config_save` event in the store (subject: the file; detail: the lines changed and
    where the previous version is kept). False when the store cannot be written."""
    from aidash_lib.store.schema import Event
    from aidash_lib.store.sqlite import SqliteStore, StoreError

    if not Path(store_path).expanduser().parent.is_dir():
        return False
    changed = sum(1 for line in saved.diff.splitlines()
                  if line[:1] in "+-" and not line.startswith(("+++", "---")))
    detail = f"{changed} lines changed; previous version: {saved.previous or 'none'}"
    try:
        with SqliteStore(store_path) as store:
            store.write_events([Event(time.time(), "config_save", str(saved.path), detail)])
    except (StoreError, ValueError) as exc:
        log.warning("config save not recorded in the store: %s", exc)
        return False
    return True


def problem_lines(edit: ConfigEdit) -> str:
    """The edit's problems, errors first, one `file:line: message` a line ("none")."""
    ranked = sorted(edit.problems, key=lambda p: p.severity is not Severity.ERROR)
    return "\n".join(str(p) for p in ranked) or "none"


def changes(before: RoutingGraph, after: RoutingGraph) -> str:
    """What the edit changes in the routing: deployments added and removed, and each group
    whose general fallback chain changed."""
    lines = []
    added = [d for d in after.deployments if d not in before.deployments]
    removed = [d for d in before.deployments if d not in after.deployments]
    if added:
        lines.append("deployments added: " + ", ".join(added))
    if removed:
        lines.append("deployments removed: " + ", ".join(removed))
    for kind in FailureKind:
        for name in after.groups:
            old, new = before.chain(name, kind), after.chain(name, kind)
            if old != new:
                lines.append(f"{name}, on {kind.words} error: {' → '.join(old) or 'none'}"
                             f"  ⇒  {' → '.join(new) or 'none'}")
    lost_before, lost_after = set(before.what_if().lost), set(after.what_if().lost)
    for name in sorted(lost_after - lost_before):
        lines.append(f"{name}: loses service")
    return "\n".join(lines) or "no change to the routing"
