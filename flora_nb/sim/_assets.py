"""Uploaded assets and the small multipart/form-data parser POST /assets needs."""

from __future__ import annotations

import mimetypes
import secrets
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from email.message import Message
from typing import Any, Callable

MAX_UPLOAD_BYTES = 4 * 1024 * 1024
# FLORA accepts images, videos, audio and PDFs (flora-api.md §4.13).
ACCEPTED_TYPES = ("image/", "video/", "audio/", "application/pdf")


@dataclass(frozen=True)
class Asset:
    """One asset; ``data`` is kept for direct uploads so the media route can serve it back."""

    asset_id: str
    workspace_id: str
    uploaded_via: str
    url: str
    content_type: str
    file_name: str
    created_at: float
    data: bytes | None

    def view(self) -> dict[str, Any]:
        """The Asset object; ``created_at`` is ISO-8601 here, as FLORA's GET /assets/{id} sends."""
        created = datetime.fromtimestamp(self.created_at, timezone.utc)
        return {
            "asset_id": self.asset_id,
            "status": "ready",
            "uploaded_via": self.uploaded_via,
            "url": self.url,
            "visibility": "workspace",
            "workspace_id": self.workspace_id,
            "content_type": self.content_type,
            "file_name": self.file_name,
            "created_at": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }


def new_asset_id() -> str:
    """A fresh ``asset_`` id."""
    return "asset_" + secrets.token_hex(10)


def guess_type(file_name: str) -> str:
    """Content type from a file name, octet-stream when unknown."""
    return mimetypes.guess_type(file_name)[0] or "application/octet-stream"


def accepted(content_type: str) -> bool:
    """Whether FLORA takes this content type as an asset."""
    return content_type.lower().startswith(ACCEPTED_TYPES)


class AssetStore:
    """Assets by id, behind a lock (uploads and run validation race)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._assets: dict[str, Asset] = {}
        self.on_add: Callable[[Asset], None] | None = None  # persistence: keep each new asset

    def add(self, asset: Asset) -> None:
        """Keep an asset."""
        with self._lock:
            self._assets[asset.asset_id] = asset
        if self.on_add is not None:
            self.on_add(asset)

    def rebase(self, old_origin: str, new_origin: str) -> None:
        """Asset URLs handed out by an earlier server of this account now point here."""
        with self._lock:
            for asset_id, asset in self._assets.items():
                if asset.url.startswith(old_origin):
                    self._assets[asset_id] = replace(asset, url=new_origin + asset.url[len(old_origin):])

    def get(self, asset_id: str) -> Asset | None:
        """The asset with this id, or None."""
        with self._lock:
            return self._assets.get(asset_id)

    def snapshot(self) -> list[Asset]:
        """Every asset, oldest first."""
        with self._lock:
            return list(self._assets.values())

    def exists(self, value: str) -> bool:
        """Whether ``value`` is the id of a known asset (run inputs may name one)."""
        return value.startswith("asset_") and self.get(value) is not None


@dataclass(frozen=True)
class Part:
    """One multipart form field; ``file_name`` is None for plain fields."""

    name: str
    file_name: str | None
    content_type: str | None
    data: bytes

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def _headers(block: bytes) -> Message:
    message = Message()
    for line in block.decode("utf-8", "replace").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            message[name.strip()] = value.strip()
    return message


def parse_multipart(content_type: str, body: bytes) -> dict[str, Part] | None:
    """Form fields by name, or None when the body is not well-formed multipart."""
    envelope = _headers(f"Content-Type: {content_type}".encode())
    boundary = envelope.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        return None
    # Delimiters are CRLF--boundary; prefixing CRLF lets the first one match the same way.
    chunks = (b"\r\n" + body).split(b"\r\n--" + boundary.encode())
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        return None
    parts: dict[str, Part] = {}
    for chunk in chunks[1:-1]:
        head, sep, data = chunk.partition(b"\r\n\r\n")
        headers = _headers(head.lstrip(b"\r\n"))
        name = headers.get_param("name", header="content-disposition")
        if not sep or not isinstance(name, str):
            return None
        parts[name] = Part(name, headers.get_filename(), headers.get("content-type"), data)
    return parts
