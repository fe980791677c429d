"""Validated, comment-preserving, atomic and versioned edits of config files.

The flow a notebook follows::

    config = open_config("config/litellm-config.yaml")
    config.data["router_settings"]["fallbacks"][0]["llama3.1-8b"].insert(0, "gpt-4o")
    remove_item(config.data["model_list"], 1)      # not `del`: keeps the comments after it
    edit = config.preview(companions=["config/providers.yaml"])   # problems, diff
    print(edit.diff)
    saved = save_edit(edit)            # refuses problems of the error kind

- **Comment-preserving**: the file is edited as ruamel.yaml's round-trip tree, written with the
  file's own indentation; lines the edit did not touch are kept byte for byte (ruamel's own
  renderings of them, e.g. of `null`, are never written back).
- **Validated**: the new text is checked as `aidash check` would check it, with the companion
  files (a LiteLLM config with its providers and mappings files); a save is refused when the
  file has problems of the error kind, or when the edit adds errors to a companion.
- **Atomic**: written to a temporary file beside it, flushed and fsynced, then renamed over it.
- **Versioned**: the version replaced is kept first in `.aidash-history/` beside the file, as
  `NAME.YYYYmmddTHHMMSS.ffffffZ.SUFFIX`.
- A save is refused when the file changed since it was read (`ConfigConflict`), and, given a
  `root`, when the file is outside it.
"""

from __future__ import annotations

import datetime as dt
import difflib
import io
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.tokens import CommentToken
from ruamel.yaml.util import load_yaml_guess_indent

from aidash_lib.check import check_files
from aidash_lib.routing import RoutingGraph, build_graph, document_kind
from aidash_lib.yamlfile import (
    Problem,
    Severity,
    UnusableInput,
    YamlDocument,
    load_yaml,
    parse_yaml,
    plain,
)

HISTORY_DIR = ".aidash-history"


class ConfigRejected(Exception):
    """The new text has problems of the error kind; nothing was written."""

    def __init__(self, path: Path, problems: Sequence[Problem]) -> None:
        lines = "\n".join(str(p) for p in problems)
        super().__init__(f"{path}: not saved, the new version has errors:\n{lines}")
        self.problems = tuple(problems)


class ConfigConflict(Exception):
    """The file changed on disk since it was read; nothing was written."""


@dataclass(frozen=True)
class ConfigEdit:
    """A proposed new version of a config file: its problems and its diff, before saving."""

    path: Path
    old_text: str
    new_text: str
    problems: tuple[Problem, ...] = ()
    companions: tuple[Path, ...] = ()

    @property
    def changed(self) -> bool:
        return self.new_text != self.old_text

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.ERROR)

    @property
    def can_save(self) -> bool:
        return not self.errors

    @property
    def diff(self) -> str:
        """A unified diff from the saved version to the new one."""
        return unified_diff(self.old_text, self.new_text, self.path.name)

    def graph(self) -> RoutingGraph:
        """The routing graph the new version gives, with the companion files."""
        docs: dict[str, YamlDocument] = {}
        for doc in (parse_yaml(self.new_text, str(self.path)),
                    *(load_yaml(p) for p in self.companions)):
            kind = document_kind(doc)
            if kind is not None:
                docs.setdefault(kind, doc)
        return build_graph(docs.get("litellm"), docs.get("providers"), docs.get("mappings"))


@dataclass(frozen=True)
class SavedConfig:
    """A save that happened: the file, the history copy of the version it replaced, the diff."""

    path: Path
    previous: Path | None
    diff: str


class EditableConfig:
    """A config file opened for editing. `data` is ruamel's round-trip tree: edit it in place
    (dicts and lists keep their comments), then `preview()` and `save()`."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.original_text = text
        self._yaml = _yaml_like(text)
        try:
            self.data: Any = self._yaml.load(text)
            self._baseline = _dump(self._yaml, self._yaml.load(text))
        except YAMLError as exc:
            raise UnusableInput(Problem(str(path), None, f"invalid YAML: {exc}")) from None

    def text(self) -> str:
        """The edited document; lines outside the edit as they were, byte for byte."""
        return keep_untouched_lines(self.original_text, self._baseline,
                                    _dump(self._yaml, self.data))

    def preview(self, companions: Iterable[str | Path] = ()) -> ConfigEdit:
        return preview_text(self.path, self.text(), companions, old_text=self.original_text)

    def save(self, companions: Iterable[str | Path] = (),
             root: str | Path | None = None) -> SavedConfig:
        return save_edit(self.preview(companions), root=root)


def open_config(path: str | Path) -> EditableConfig:
    """Open a config file for editing (`UnusableInput` if it cannot be read or parsed)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise UnusableInput(Problem(str(file), None, f"cannot read: {exc}")) from None
    parse_yaml(text, str(file))
    return EditableConfig(file, text)


def preview_text(
    path: str | Path, new_text: str, companions: Iterable[str | Path] = (),
    *, old_text: str | None = None,
) -> ConfigEdit:
    """Check `new_text` as the next version of `path`, with its companion files."""
    file = Path(path)
    others = tuple(Path(p) for p in companions if Path(p).resolve() != file.resolve())
    before = old_text if old_text is not None else file.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="aidash-edit-") as folder:
        candidate = Path(folder) / file.name
        candidate.write_text(new_text, encoding="utf-8")
        after = check_files([candidate, *others]).problems
        current = Path(folder) / "current" / file.name
        current.parent.mkdir()
        current.write_text(before, encoding="utf-8")
        earlier = set(check_files([current, *others]).problems)
    own = [_moved(p, str(candidate), str(file)) for p in after if p.path == str(candidate)]
    added = [p for p in after if p.path != str(candidate) and p not in earlier]
    return ConfigEdit(file, before, new_text, tuple(own + added), others)


def save_edit(edit: ConfigEdit, *, root: str | Path | None = None) -> SavedConfig:
    """Write a previewed edit: refuse errors, a file changed since, or one outside `root`;
    keep the version replaced in the history folder; write atomically."""
    path = edit.path.resolve() if edit.path.exists() else edit.path.absolute()
    if root is not None and not path.is_relative_to(Path(root).resolve()):
        raise PermissionError(f"{edit.path}: outside {root}, where configs may be edited")
    if edit.errors:
        raise ConfigRejected(edit.path, edit.errors)
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if current != edit.old_text:
        raise ConfigConflict(f"{edit.path}: changed on disk since it was read; open it again")
    previous = keep_version(path) if path.exists() else None
    atomic_write(path, edit.new_text)
    return SavedConfig(edit.path, previous, edit.diff)


def save_text(
    path: str | Path, new_text: str, companions: Iterable[str | Path] = (),
    *, root: str | Path | None = None,
) -> SavedConfig:
    """Preview and save in one step (`ConfigRejected` on errors)."""
    return save_edit(preview_text(path, new_text, companions), root=root)


def history(path: str | Path) -> list[Path]:
    """The versions kept for a file, oldest first."""
    file = Path(path)
    folder = file.parent / HISTORY_DIR
    if not folder.is_dir():
        return []
    pattern = re.compile(re.escape(file.stem) + r"\.\d{8}T\d{6}\.\d{6}Z(-\d+)?"
                         + re.escape(file.suffix or ".yaml") + "$")
    return sorted(p for p in folder.iterdir() if pattern.match(p.name))


def keep_version(path: Path) -> Path:
    """Copy the file into its history folder (fsynced); the copy's path."""
    folder = path.parent / HISTORY_DIR
    folder.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    suffix = path.suffix or ".yaml"
    target = folder / f"{path.stem}.{stamp}{suffix}"
    counter = 1
    while target.exists():
        target = folder / f"{path.stem}.{stamp}-{counter}{suffix}"
        counter += 1
    atomic_write(target, path.read_text(encoding="utf-8"), mode=path.stat().st_mode)
    return target


def atomic_write(path: Path, text: str, mode: int | None = None) -> None:
    """Write `text` to a temporary file beside `path`, fsync it, rename it over `path`, fsync
    the folder. The file keeps its permissions (or takes `mode`)."""
    if mode is None and path.exists():
        mode = path.stat().st_mode
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temporary, stat.S_IMODE(mode))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def remove_item(items: CommentedSeq, index: int) -> Any:
    """Remove `items[index]`, keeping the comment lines that follow it (ruamel attaches them to
    the item's last value, so `del items[index]` would drop the heading of the next item).
    Returns the item removed."""
    slot = trailing_slot(items[index])
    token = slot[0][slot[1]] if slot else None
    item = items.pop(index)
    rest = token.value.partition("\n")[2] if token is not None else ""
    if not rest.strip():
        return item
    if index > 0:
        previous = trailing_slot(items[index - 1])
        if previous is not None:
            previous[0][previous[1]].value += rest
        else:
            token.value = "\n" + rest
            attach_trailing(items[index - 1], token)
    elif items.ca.comment and isinstance(items.ca.comment[1], list) and items.ca.comment[1]:
        items.ca.comment[1][-1].value += rest
    elif items:
        indent = len(rest) - len(rest.lstrip(" "))
        items.ca.comment = [None, [CommentToken(rest[indent:], CommentMark(indent), None)]]
    return item


def trailing_slot(node: Any) -> tuple[list[Any], int] | None:
    """Where ruamel keeps the comment that follows `node`: (its comment list, position)."""
    if isinstance(node, CommentedMap) and node:
        key = list(node)[-1]
        entry = node.ca.items.get(key)
        if entry and entry[2] is not None:
            return entry, 2
        return trailing_slot(node[key]) if not _is_flow(node[key]) else None
    if isinstance(node, CommentedSeq) and node:
        entry = node.ca.items.get(len(node) - 1)
        if entry and entry[0] is not None:
            return entry, 0
        return trailing_slot(node[-1]) if not _is_flow(node[-1]) else None
    return None


def attach_trailing(node: Any, token: CommentToken) -> None:
    if isinstance(node, CommentedMap) and node:
        key = list(node)[-1]
        if isinstance(node[key], CommentedMap | CommentedSeq) and node[key] \
                and not _is_flow(node[key]):
            attach_trailing(node[key], token)
        else:
            node.ca.items.setdefault(key, [None, None, None, None])[2] = token
    elif isinstance(node, CommentedSeq) and node:
        if isinstance(node[-1], CommentedMap | CommentedSeq) and node[-1] \
                and not _is_flow(node[-1]):
            attach_trailing(node[-1], token)
        else:
            node.ca.items.setdefault(len(node) - 1, [None, None, None, None])[0] = token


def _is_flow(node: Any) -> bool:
    return isinstance(node, CommentedMap | CommentedSeq) and bool(node.fa.flow_style())


def unified_diff(old: str, new: str, name: str) -> str:
    return "".join(difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile=f"{name} (saved)", tofile=f"{name} (edited)",
    ))


def keep_untouched_lines(original: str, baseline: str, rendered: str) -> str:
    """`rendered` (ruamel's text of the edited tree) with every line the edit did not change
    taken from `original` instead of from `baseline` (ruamel's text of the unedited tree).
    Falls back to `rendered` if the result would not mean the same."""
    if original == baseline:
        return rendered
    a, b, c = (text.splitlines(keepends=True) for text in (original, baseline, rendered))
    chunks: list[tuple[int, int, int, int]] = []  # (a1, a2, b1, b2), in order
    for tag, a1, a2, b1, b2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            chunks.extend((a1 + k, a1 + k + 1, b1 + k, b1 + k + 1) for k in range(a2 - a1))
        else:
            chunks.append((a1, a2, b1, b2))
    out: list[str] = []
    opcodes = difflib.SequenceMatcher(None, b, c, autojunk=False).get_opcodes()
    for tag, i1, i2, j1, j2 in opcodes:
        if tag != "equal":
            out.extend(c[j1:j2])
            continue
        for a1, a2, b1, b2 in chunks:
            if b1 == b2:  # lines only the original has: keep them inside untouched stretches
                if i1 <= b1 < i2 or b1 == i2 == len(b):
                    out.extend(a[a1:a2])
            elif i1 <= b1 and b2 <= i2:
                out.extend(a[a1:a2])
            elif b1 < i2 and b2 > i1:
                out.extend(b[max(b1, i1):min(b2, i2)])
    result = "".join(out)
    try:
        same = plain(parse_yaml(result).data) == plain(parse_yaml(rendered).data)
    except UnusableInput:
        same = False
    return result if same else rendered


def _yaml_like(text: str) -> YAML:
    """A round-trip YAML writer using the file's own indentation and no line wrapping."""
    try:
        _, sequence, offset = load_yaml_guess_indent(text)
    except YAMLError:
        sequence, offset = None, None
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=_mapping_indent(text), sequence=sequence or 2, offset=offset or 0)
    return yaml


def _mapping_indent(text: str) -> int:
    """The indentation of a mapping nested in a mapping, as the file uses it (else 2)."""
    previous: tuple[int, bool] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if previous is not None and previous[1] and not stripped.startswith("-") \
                and indent > previous[0]:
            return indent - previous[0]
        opens = stripped.endswith(":") and not stripped.startswith("-")
        previous = (indent, opens)
    return 2


def _dump(yaml: YAML, data: Any) -> str:
    buffer = io.StringIO()
    yaml.dump(data, buffer)
    return buffer.getvalue()


def _moved(problem: Problem, old: str, new: str) -> Problem:
    return Problem(new if problem.path == old else problem.path, problem.line,
                   problem.message.replace(old, new), problem.severity)
