"""Operator-written documents (the escalation directory, the site map): read as UTF-8, with a one-line problem."""

from __future__ import annotations

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
