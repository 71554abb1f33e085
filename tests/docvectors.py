"""Test vectors as docs/PROTOCOL.md writes them: fenced blocks of `key: value` lines, read by the tests."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

PROTOCOL_TEXT: Final = (Path(__file__).resolve().parents[1] / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")

Vector = dict[str, str]


def doc_vectors(kind: str, text: str = PROTOCOL_TEXT) -> list[Vector]:
    """Every ```<kind> block as a dict; '#' lines are comments; a key may appear once per block.

    A line that starts with a space or a tab continues the previous line's value after one line feed,
    for values that are several lines on purpose (an SMS text folded by a phone, docs/PROTOCOL.md §16.7).
    """
    block = re.compile(rf"^```{re.escape(kind)}\n(.*?)^```$", re.MULTILINE | re.DOTALL)
    vectors = []
    for body in block.findall(text):
        fields: Vector = {}
        last_key: str | None = None
        for line in body.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0] in " \t":
                if last_key is None:
                    raise ValueError(f"continuation line without a value to continue: {line!r}")
                fields[last_key] += "\n" + line.strip()
                continue
            key, sep, value = line.partition(":")
            if not sep or not key.strip() or not value.strip():
                raise ValueError(f"vector line is not 'key: value': {line!r}")
            if key.strip() in fields:
                raise ValueError(f"key {key.strip()!r} repeated in one vector block")
            last_key = key.strip()
            fields[last_key] = value.strip()
        vectors.append(fields)
    return vectors
