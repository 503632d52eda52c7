"""Cursor pagination: the cursor is base64 of ``{"offset": N}``, as in FLORA's own examples."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any, TypeVar

from ._responses import validation_error

T = TypeVar("T")
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_LIMIT_PROBLEM = ("limit", f"Expected an integer between 1 and {MAX_LIMIT}")
_CURSOR_PROBLEM = ("cursor", "Invalid cursor")


def encode_cursor(offset: int) -> str:
    """URL-safe base64 without padding, so it survives a query string unescaped."""
    raw = json.dumps({"offset": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> int | None:
    """The offset in a cursor (standard or URL-safe base64, padded or not), None if garbage."""
    # A '+' sent unescaped in a query string arrives as a space.
    text = cursor.strip().replace(" ", "+").replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        offset = json.loads(raw)["offset"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        return None
    return offset


def parse_limit(value: str | None) -> int | None:
    """The page size, DEFAULT_LIMIT when absent, None when outside 1..100 or not an integer."""
    if value is None or value == "":
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except ValueError:
        return None
    return limit if 1 <= limit <= MAX_LIMIT else None


def page(items: Sequence[T], query: dict[str, str]) -> tuple[Sequence[T], dict[str, Any]]:
    """The page the query's cursor/limit select and its ``meta``; bad values are one 400."""
    limit = parse_limit(query.get("limit"))
    cursor = query.get("cursor")
    offset = decode_cursor(cursor) if cursor else 0
    if limit is None or offset is None:
        problems = [_LIMIT_PROBLEM] if limit is None else []
        problems += [_CURSOR_PROBLEM] if offset is None else []
        raise validation_error(problems)
    more = offset + limit < len(items)
    meta = {
        "next_cursor": encode_cursor(offset + limit) if more else None,
        "total_estimate": len(items),
    }
    return items[offset : offset + limit], meta
