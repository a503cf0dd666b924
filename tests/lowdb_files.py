"""LowDB records and writes in upstream's shape, shared by the tests that feed syncd a file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson


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
