"""Uploaded assets and the small multipart/form-data parser POST /assets needs."""

from __future__ import annotations

import mimetypes
import secrets
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from email.message import Message
from typing import Any, Callable

MAX_UPLOAD_BYTES = 4 * 1024 * 1024  # multipart POST /assets
# Signed uploads: FLORA publishes no limit; the 50 MB of URL sources (flora-api.md §4.13) stands in.
MAX_SIGNED_UPLOAD_BYTES = 50 * 1024 * 1024
PROCESSING_SECONDS = 1.0  # from complete to ready, divided by the simulator's speed
UPLOAD_WINDOW_SECONDS = 3600.0  # how long a signed upload URL stays valid
# FLORA takes these types only (flora-api.md §4.13), spelled as browsers and Python send them.
ACCEPTED_TYPES = frozenset({
    "image/jpeg", "image/png", "image/webp", "image/gif", "image/avif", "image/heic", "image/heif",
    "video/mp4", "video/webm", "video/quicktime", "audio/mpeg", "audio/wav", "audio/ogg", "application/pdf",
})
_ALIASES = {"image/jpg": "image/jpeg", "audio/x-wav": "audio/wav", "audio/wave": "audio/wav",
            "audio/vnd.wave": "audio/wav", "audio/mp3": "audio/mpeg"}
# The first bytes a few types must start with: a file that claims the type but lacks them fails.
_SIGNATURES = {"image/png": (b"\x89PNG",), "image/jpeg": (b"\xff\xd8",), "image/gif": (b"GIF8",),
               "application/pdf": (b"%PDF",), "audio/ogg": (b"OggS",)}


@dataclass
class Asset:
    """One asset; ``data`` is kept for uploaded bytes so the media route can serve them back.

    Signed uploads start ``pending_upload`` with an upload ``token``; their bytes arrive at the
    storage route, ``complete`` starts processing, and a read after ``ready_at`` settles them.
    """

    asset_id: str
    workspace_id: str
    uploaded_via: str
    url: str
    content_type: str
    file_name: str
    created_at: float
    data: bytes | None
    status: str = "ready"
    token: str | None = None
    ready_at: float | None = None
    failure_message: str | None = None

    def settle(self, now: float) -> None:
        """Finish processing once due: ready, or failed when the bytes are not what they claim."""
        if self.status != "pending_upload" or self.ready_at is None or now < self.ready_at:
            return
        starts = _SIGNATURES.get(self.content_type)
        if self.data is not None and starts and not self.data.startswith(starts):
            self.status = "failed"
            self.failure_message = f"The uploaded file is not a valid {self.content_type} file."
        else:
            self.status = "ready"

    def view(self) -> dict[str, Any]:
        """The Asset object; ``created_at`` is ISO-8601 here, as FLORA's GET /assets/{id} sends."""
        view: dict[str, Any] = {
            "asset_id": self.asset_id,
            "status": self.status,
            "uploaded_via": self.uploaded_via,
            "url": self.url,
            "visibility": "workspace",
            "workspace_id": self.workspace_id,
            "content_type": self.content_type,
            "file_name": self.file_name,
            "created_at": _iso(self.created_at),
        }
        if self.data is not None:
            view["size_bytes"] = len(self.data)
        if self.failure_message:
            view["failure_message"] = self.failure_message
        return view

    def reservation(self, storage_url: str) -> dict[str, Any]:
        """The answer to a signed-url reservation: the asset plus where and how to upload."""
        view = self.view()
        view["expires_at"] = _iso(self.created_at + UPLOAD_WINDOW_SECONDS)
        view["upload"] = {
            "url": storage_url,
            "method": "POST",
            "content_type": "multipart/form-data",
            "file_field": "file",
            "form_fields": {"key": self.asset_id, "token": self.token or ""},
        }
        return view


def _iso(seconds: float) -> str:
    stamp = datetime.fromtimestamp(seconds, timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_asset_id() -> str:
    """A fresh ``asset_`` id."""
    return "asset_" + secrets.token_hex(10)


def new_upload_token() -> str:
    """The secret a signed upload URL's form carries."""
    return secrets.token_urlsafe(24)


def guess_type(file_name: str) -> str:
    """Content type from a file name, octet-stream when unknown."""
    return normalise_type(mimetypes.guess_type(file_name)[0] or "application/octet-stream")


def normalise_type(content_type: str) -> str:
    """The canonical spelling of a content type (parameters dropped, aliases folded)."""
    plain = content_type.split(";")[0].strip().lower()
    return _ALIASES.get(plain, plain)


def accepted(content_type: str) -> bool:
    """Whether FLORA takes this content type as an asset."""
    return normalise_type(content_type) in ACCEPTED_TYPES


class AssetStore:
    """Assets by id, behind a lock (uploads and run validation race)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._assets: dict[str, Asset] = {}
        self.on_add: Callable[[Asset], None] | None = None  # persistence: keep each new asset

    @property
    def lock(self) -> threading.Lock:
        """Held while an asset changes state."""
        return self._lock

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

    def get(self, asset_id: str, now: float | None = None) -> Asset | None:
        """The asset with this id (processing settled as of ``now``), or None."""
        with self._lock:
            asset = self._assets.get(asset_id)
            if asset is not None and now is not None:
                asset.settle(now)
            return asset

    def problem(self, value: str, origin: str, now: float) -> str | None:
        """Why a media input naming an asset (by id or by its URL here) cannot be used, or None."""
        if value.startswith(origin + "/media/assets/"):
            asset_id = value[len(origin + "/media/assets/"):].split("/")[0]
        elif value.startswith("asset_"):
            asset_id = value
        else:
            return None
        asset = self.get(asset_id, now)
        if asset is None:
            return "Unknown asset URL" if value.startswith("http") else "Expected an http(s) URL or an asset_ id"
        if asset.status != "ready":
            return f"Asset {asset_id} is not ready (status {asset.status})"
        return None

    def snapshot(self) -> list[Asset]:
        """Every asset, oldest first."""
        with self._lock:
            return list(self._assets.values())

    def changed(self, asset: Asset) -> None:
        """An asset's bytes or state moved on (a signed upload arrived, processing started): keep it."""
        if self.on_add is not None:
            self.on_add(asset)


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
