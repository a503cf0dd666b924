"""LowDB records and writes in upstream's shape, shared by the tests that feed syncd a file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from hypothesis import strategies as st


def item(key: str, title: str = "t", **kw: Any) -> dict[str, Any]:
    """A workspace item in upstream's shape."""
    return {"id": key, "title": title, "description": "d", "category": "dashboard", "priority": "medium",
            "status": "new", "tags": ["x"], "createdAt": "2025-10-23T22:45:24.940Z", "updatedAt": None, **kw}


def category(name: str, order: int = 1) -> dict[str, Any]:
    """A workspace category as the LowDB strategy seeds it (id == name, no display_name)."""
    return {"id": name, "name": name, "description": f"{name} items", "color": "#10b981", "display_order": order,
            "active": True}


CATEGORIES = [category("dashboard", 1), category("feature", 2)]
"""The categories `item` refers to: services may only write items of an existing category."""


def write_v7(path: Path, doc: Any) -> None:
    """Like lowdb@7: 2-space JSON to `.<name>.tmp`, then renamed over the file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(doc if isinstance(doc, bytes) else orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class Mutations:
    """How a property test steps a LowDB document on: one operation on one record, or a new file."""

    files: st.SearchStrategy[dict[str, Any]]
    """A whole document: what operation `new` writes."""
    records: st.SearchStrategy[dict[str, Any]]
    """A record that `append` and `insert` add."""
    titles: st.SearchStrategy[str]
    """The `title` that `edit` gives a record."""
    collections: Sequence[str] = ("items",)
    operations: Sequence[str] = ("edit", "append", "insert", "delete", "new")
    """Drawn from uniformly: name one twice to make it likelier. `swap` moves a record to the front."""

    def mutated(self, data: st.DataObject, document: dict[str, Any]) -> dict[str, Any]:
        """The next state: `document` with one record of one collection changed, or a new file."""
        collection = data.draw(st.sampled_from(self.collections))
        records = list(document[collection])
        op = data.draw(st.sampled_from(self.operations))
        at = data.draw(st.integers(0, max(len(records) - 1, 0)))
        if op == "new":
            return data.draw(self.files)
        if op == "append" or not records:
            records.append(data.draw(self.records))
        elif op == "insert":
            records.insert(at, data.draw(self.records))
        elif op == "delete":
            del records[at]
        elif op == "swap":
            records[0], records[at] = records[at], records[0]
        else:
            records[at] = {**records[at], "title": data.draw(self.titles)}
        return {**document, collection: records}
