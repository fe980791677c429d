"""`aidash check`: validate config files, telling each file's kind by its content.

Kinds: the dashboard settings, a LiteLLM proxy config (its structure, then the routing graph's
checks from `routing.py`), providers and model mappings (`routing_files.py`). The routing files
given together are checked as one graph, so that references between them are judged (a provider
a deployment names, a group a mapping targets). Each problem is `file:line: message`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aidash_lib.routing import LITELLM_KEYS, MAPPINGS_KEY, PROVIDERS_KEY, build_graph
from aidash_lib.settings import Settings, SettingsError, validate_settings_file
from aidash_lib.yamlfile import Problem, Severity, UnusableInput, YamlDocument, load_yaml

SETTINGS_KEYS = frozenset(Settings.model_fields) - {"source_path"}


class FileKind(enum.StrEnum):
    DASHBOARD_SETTINGS = "dashboard settings"
    LITELLM_CONFIG = "LiteLLM config"
    PROVIDERS = "providers"
    MAPPINGS = "model mappings"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class FileCheck:
    """The outcome of checking one file."""

    path: str
    kind: FileKind
    problems: tuple[Problem, ...] = ()
    unusable: bool = False


@dataclass(frozen=True)
class CheckReport:
    files: tuple[FileCheck, ...] = field(default_factory=tuple)

    @property
    def problems(self) -> list[Problem]:
        return [problem for checked in self.files for problem in checked.problems]

    @property
    def exit_code(self) -> int:
        """0 valid, 1 problems, 2 unusable input (as DESIGN.md's command table says).

        Warnings (an unset environment variable, a fallback cycle LiteLLM cuts itself) are
        printed but do not make a file invalid."""
        if any(checked.unusable for checked in self.files):
            return 2
        return 1 if any(p.severity is Severity.ERROR for p in self.problems) else 0


def file_kind(doc: YamlDocument) -> FileKind:
    """Tell a config file's kind from its top-level keys, whatever its name."""
    data = doc.data
    if not isinstance(data, dict):
        return FileKind.UNKNOWN
    keys = set(data)
    if keys & LITELLM_KEYS:
        return FileKind.LITELLM_CONFIG
    if PROVIDERS_KEY in keys:
        return FileKind.PROVIDERS
    if MAPPINGS_KEY in keys:
        return FileKind.MAPPINGS
    if keys & SETTINGS_KEYS:
        return FileKind.DASHBOARD_SETTINGS
    return FileKind.UNKNOWN


_ROUTING_KINDS = (FileKind.LITELLM_CONFIG, FileKind.PROVIDERS, FileKind.MAPPINGS)


def check_file(path: str | Path) -> FileCheck:
    """Check one file on its own (references to other routing files are not judged)."""
    return check_files([path]).files[0]


def _check_one(path: str | Path) -> tuple[FileCheck, YamlDocument | None]:
    name = str(path)
    try:
        doc = load_yaml(path)
    except UnusableInput as exc:
        return FileCheck(name, FileKind.UNKNOWN, (exc.problem,), unusable=True), None
    return _check_document(path, doc), doc


def _check_document(path: str | Path, doc: YamlDocument) -> FileCheck:
    name = str(path)
    kind = file_kind(doc)
    if kind is FileKind.DASHBOARD_SETTINGS:
        try:
            validate_settings_file(path)
        except SettingsError as exc:
            return FileCheck(name, kind, tuple(exc.problems))
        return FileCheck(name, kind)
    if kind is FileKind.LITELLM_CONFIG:
        return FileCheck(name, kind, tuple(litellm_config_problems(doc)))
    if kind in _ROUTING_KINDS:
        return FileCheck(name, kind)
    message = (
        "not a config file aidash knows: expected dashboard settings (gateway:, intervals:, ...),"
        " a LiteLLM config (model_list:, router_settings:, ...), providers (providers:) or model"
        " mappings (mappings:)"
    )
    return FileCheck(name, kind, (Problem(name, 1, message),), unusable=True)


def check_files(paths: Iterable[str | Path]) -> CheckReport:
    """Check each file; the routing files among them (LiteLLM configs, providers, mappings)
    together, as one routing graph per LiteLLM config."""
    checked = [_check_one(path) for path in paths]
    docs = {kind: [doc for check, doc in checked if check.kind is kind and doc is not None
                   and not check.unusable]
            for kind in _ROUTING_KINDS}
    providers = docs[FileKind.PROVIDERS][0] if docs[FileKind.PROVIDERS] else None
    mappings = docs[FileKind.MAPPINGS][0] if docs[FileKind.MAPPINGS] else None
    graph_problems: list[Problem] = []
    for litellm in docs[FileKind.LITELLM_CONFIG] or [None]:
        graph_problems.extend(build_graph(litellm, providers, mappings).problems)
    for extra in (*docs[FileKind.PROVIDERS][1:], *docs[FileKind.MAPPINGS][1:]):
        kind = file_kind(extra)
        alone = build_graph(providers=extra if kind is FileKind.PROVIDERS else None,
                            mappings=extra if kind is FileKind.MAPPINGS else None)
        graph_problems.extend(alone.problems)
    files = []
    for check, _doc in checked:
        if check.kind in _ROUTING_KINDS and not check.unusable:
            mine = [p for p in graph_problems if p.path == check.path]
            check = FileCheck(check.path, check.kind,
                              tuple(dict.fromkeys((*check.problems, *mine))))
        files.append(check)
    return CheckReport(tuple(files))


def litellm_config_problems(doc: YamlDocument) -> list[Problem]:
    """Structural problems of a LiteLLM proxy config: the shape `model_list` must have."""
    problems: list[Problem] = []
    model_list = doc.data.get("model_list")
    if model_list is None:
        return problems
    if not isinstance(model_list, list):
        return [Problem(doc.path, doc.line_of(["model_list"]), "model_list: must be a list")]
    seen_ids: dict[str, int | None] = {}
    for index, entry in enumerate(model_list):
        loc: list[str | int] = ["model_list", index]
        if not isinstance(entry, dict):
            problems.append(
                _problem(doc, loc, "must be a mapping with model_name and litellm_params")
            )
            continue
        if not isinstance(entry.get("model_name"), str) or not entry.get("model_name"):
            problems.append(_problem(doc, loc, "model_name: missing (the model group's name)"))
        params = entry.get("litellm_params")
        if not isinstance(params, dict):
            problems.append(_problem(doc, loc, "litellm_params: missing"))
        elif not isinstance(params.get("model"), str) or not params.get("model"):
            problems.append(_problem(
                doc, [*loc, "litellm_params"], "litellm_params.model: missing (provider/model)"
            ))
        info = entry.get("model_info")
        deployment_id = info.get("id") if isinstance(info, dict) else None
        if deployment_id is not None:
            id_loc = [*loc, "model_info", "id"]
            if str(deployment_id) in seen_ids:
                first = seen_ids[str(deployment_id)]
                message = f"model_info.id {deployment_id!r} is used twice (first on line {first})"
                problems.append(_problem(doc, id_loc, message))
            else:
                seen_ids[str(deployment_id)] = doc.line_of(id_loc)
    return problems


def _problem(doc: YamlDocument, loc: Sequence[str | int], message: str) -> Problem:
    where = ".".join(str(part) for part in loc)
    return Problem(doc.path, doc.line_of(loc), f"{where}: {message}")
