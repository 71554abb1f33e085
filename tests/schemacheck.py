"""A small JSON Schema checker for the project's own contracts (docs/asyncapi.yaml, docs/openapi.yaml).

No validator library is a dependency, and the documents use a small subset of JSON Schema (draft-07 for
AsyncAPI, 2020-12 for OpenAPI): this checks exactly that subset and refuses any keyword it does not know, so a
schema can never pass because a keyword was silently ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Final

_ANNOTATIONS: Final = frozenset({"description", "title", "examples", "format", "default", "contentMediaType"})
_TYPES: Final[dict[str, Callable[[Any], bool]]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


class SchemaChecker:
    """Checks values against schemas of one document (`$ref`s are resolved in it)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def resolve(self, ref: str) -> Any:
        assert ref.startswith("#/"), ref
        node: Any = self.document
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def deref(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            node = self.resolve(node["$ref"])
        return node

    def violations(self, schema: Any, value: Any, path: str = "$") -> list[str]:
        """What in `value` breaks `schema`; empty when it conforms."""
        schema = self.deref(schema)
        errors: list[str] = []
        for key, rule in schema.items():
            if key in _ANNOTATIONS:
                continue
            if key == "type":
                names = rule if isinstance(rule, list) else [rule]
                if not any(_TYPES[name](value) for name in names):
                    return [f"{path}: {value!r} is not of type {names}"]
            elif key == "enum":
                if value not in rule:
                    errors.append(f"{path}: {value!r} not in {rule}")
            elif key == "const":
                if value != rule:
                    errors.append(f"{path}: {value!r} is not {rule!r}")
            elif key == "required":
                errors += [f"{path}: missing {name}" for name in rule if isinstance(value, dict) and name not in value]
            elif key == "properties":
                if isinstance(value, dict):
                    for name, sub in rule.items():
                        if name in value:
                            errors += self.violations(sub, value[name], f"{path}.{name}")
            elif key == "additionalProperties":
                assert rule is False, "only additionalProperties: false is supported"
                extra = set(value) - set(schema.get("properties", {})) if isinstance(value, dict) else set()
                errors += [f"{path}: unexpected {name}" for name in sorted(extra)]
            elif key == "items":
                errors += self._items(schema, rule, value, path)
            elif key == "prefixItems":
                if isinstance(value, list):
                    for i, (sub, item) in enumerate(zip(rule, value, strict=False)):
                        errors += self.violations(sub, item, f"{path}[{i}]")
            elif key == "additionalItems":
                assert rule is False
                if isinstance(value, list) and len(value) > len(schema["items"]):
                    errors.append(f"{path}: too many items")
            elif key in ("minItems", "maxItems", "minLength", "maxLength"):
                if isinstance(value, list | str):
                    ok = len(value) >= rule if key.startswith("min") else len(value) <= rule
                    if not ok:
                        errors.append(f"{path}: length {len(value)} breaks {key} {rule}")
            elif key in ("minimum", "maximum"):
                if _TYPES["number"](value):
                    ok = value >= rule if key == "minimum" else value <= rule
                    if not ok:
                        errors.append(f"{path}: {value} breaks {key} {rule}")
            elif key == "pattern":
                if isinstance(value, str) and not re.search(rule, value):
                    errors.append(f"{path}: {value!r} does not match {rule}")
            elif key == "oneOf":
                matching = sum(1 for sub in rule if not self.violations(sub, value, path))
                if matching != 1:
                    errors.append(f"{path}: {value!r} matches {matching} of oneOf")
            elif key == "allOf":
                for sub in rule:
                    errors += self.violations(sub, value, path)
            else:
                raise AssertionError(f"schema keyword {key!r} at {path} is not supported by this checker")
        return errors

    def _items(self, schema: dict[str, Any], rule: Any, value: Any, path: str) -> list[str]:
        """`items` as a list (draft-07 tuples) or as one schema for the items after `prefixItems` (2020-12)."""
        if not isinstance(value, list):
            return []
        errors: list[str] = []
        if isinstance(rule, list):
            for i, (sub, item) in enumerate(zip(rule, value, strict=False)):
                errors += self.violations(sub, item, f"{path}[{i}]")
            return errors
        first = len(schema.get("prefixItems", []))
        for i, item in enumerate(value[first:], start=first):
            errors += self.violations(rule, item, f"{path}[{i}]")
        return errors
