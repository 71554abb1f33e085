"""Operator-written documents (the escalation directory, the site map): read as UTF-8, with a one-line problem."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path


class DocumentUnreadable(Exception):
    """The file cannot be read as UTF-8 text; `problem` is one line naming the file and why."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def read_document(path: Path) -> str:
    """The file's text (UTF-8, a byte-order mark dropped); DocumentUnreadable when it cannot be read."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DocumentUnreadable(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentUnreadable(f"{path}: not UTF-8 text (invalid byte at offset {exc.start})") from None


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """ " (did you mean 'wait_s'?)" when a choice is close to `value`, else ""."""
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def join_path(path: str, key: str) -> str:
    """The path of `key` inside `path` ("policies[0]" + "steps" -> "policies[0].steps")."""
    return f"{path}.{key}" if path else key


class DocumentChecker:
    """Reads one document leniently: every problem is recorded (`add`) and reading goes on with a placeholder.

    Subclasses say how a problem is kept (`add`) and how a value is named in messages (`kind`: TOML and JSON
    call the same things by different words).
    """

    def add(self, path: str, message: str) -> None:
        raise NotImplementedError

    def kind(self, value: object) -> str:
        raise NotImplementedError

    def array_words(self, where: str) -> str:
        """How an array of members at `where` is named in messages ("an array of objects")."""
        raise NotImplementedError

    def members(self, path: str, table: Mapping[str, object], key: str) -> list[tuple[str, Mapping[str, object]]]:
        """The tables (objects) of the array at `key`, each with its path; anything else is a problem."""
        where = join_path(path, key)
        value = table.get(key, [])
        if not isinstance(value, list):
            self.add(where, f"expected {self.array_words(where)}, got {self.kind(value)}")
            return []
        found: list[tuple[str, Mapping[str, object]]] = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                found.append((f"{where}[{i}]", item))
            else:
                self.add(f"{where}[{i}]", f"expected {self.kind({})}, got {self.kind(item)}")
        return found

    def fields(
        self,
        path: str,
        table: Mapping[str, object],
        spec: tuple[tuple[str, ...], tuple[str, ...]],
        *,
        where: str | None = None,
    ) -> None:
        """Unknown fields (with a "did you mean") and missing required ones; `spec` is (required, optional)."""
        required, optional = spec
        allowed = (*required, *optional)
        for key in table:
            if key not in allowed:
                self.add(where or path, f"unknown field {key!r}{did_you_mean(key, allowed)}")
        for key in required:
            if key not in table:
                self.add(where or path, f"missing required field {key!r}")

    def text(
        self, path: str, table: Mapping[str, object], key: str, rule: Callable[[str], str | None] | None = None
    ) -> str | None:
        """The string at `key` (also when `rule` finds a problem with it); None when absent or not a string."""
        if key not in table:
            return None
        value = table[key]
        if not isinstance(value, str):
            self.add(join_path(path, key), f"expected a string, got {self.kind(value)}")
            return None
        problem = rule(value) if rule is not None else None
        if problem is not None:
            self.add(join_path(path, key), problem)
        return value
