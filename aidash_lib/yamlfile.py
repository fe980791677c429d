"""YAML files with positions: load them keeping line numbers, report problems as `file:line`.

Every config file aidash reads goes through here, so that any problem, from a YAML syntax error
to a pydantic validation error deep in a list, names the file and the line an operator must fix.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a config file, located to a line (1-based) where one is known."""

    path: str
    line: int | None
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        tag = "" if self.severity is Severity.ERROR else f"{self.severity.value}: "
        return f"{where}: {tag}{self.message}"


class UnusableInput(Exception):
    """A file that cannot be read or parsed at all (missing, unreadable, not YAML)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML file: the data (ruamel's commented containers) and where it came from."""

    path: str
    data: Any

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """The 1-based line of the value at `loc` (a pydantic-style path), or its nearest parent."""
        return line_of(self.data, loc)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    return yaml


def load_yaml(path: str | Path) -> YamlDocument:
    """Read a YAML file keeping positions; `UnusableInput` if it cannot be read or parsed."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UnusableInput(Problem(name, None, "no such file")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UnusableInput(Problem(name, None, f"cannot read: {exc}")) from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str = "<string>") -> YamlDocument:
    """Parse YAML text keeping positions; `UnusableInput` on a syntax error, with its line."""
    try:
        data = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise UnusableInput(Problem(name, line, f"invalid YAML: {message}")) from None
    except YAMLError as exc:
        raise UnusableInput(Problem(name, None, f"invalid YAML: {exc}")) from None
    return YamlDocument(name, data)


def line_of(data: Any, loc: Sequence[str | int]) -> int | None:
    """Walk `loc` into ruamel containers; the line of the deepest key or item found."""
    line: int | None = None
    node = data
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            if line is None and hasattr(node, "lc") and node.lc.line is not None:
                line = node.lc.line + 1
            break
    if line is None and hasattr(data, "lc") and data.lc.line is not None:
        line = data.lc.line + 1
    return line


def validation_problems(doc: YamlDocument, error: ValidationError) -> list[Problem]:
    """Pydantic's errors as located problems: `file:line: field.path: message`."""
    problems = []
    for item in error.errors(include_url=False):
        loc = [part for part in item["loc"] if not _is_union_tag(part)]
        field = ".".join(str(part) for part in loc) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown setting (check its spelling and indentation)"
        problems.append(Problem(doc.path, doc.line_of(loc), f"{field}: {message}"))
    return problems


def _is_union_tag(part: str | int) -> bool:
    """Pydantic inserts the union member's type name in `loc` (e.g. 'function-after[...]')."""
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool"})


def plain(data: Any) -> Any:
    """ruamel containers to plain dicts and lists (for pydantic and JSON)."""
    if isinstance(data, dict):
        return {key: plain(value) for key, value in data.items()}
    if isinstance(data, list):
        return [plain(value) for value in data]
    return data


def format_problems(problems: Iterable[Problem]) -> str:
    return "\n".join(str(problem) for problem in problems)
