"""Uploading local files as FLORA assets for a session, once per content (cached in the ledger)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ._errors import NotFoundError
from ._files import LocalFile, local_path, read_source
from ._models import Asset, Technique

if TYPE_CHECKING:
    from ._engine import RunEngine

__all__ = ["MEDIA_TYPES", "Uploader"]

MEDIA_TYPES = frozenset({"imageUrl", "videoUrl", "audioUrl", "documentUrl"})


class Uploader:
    """Turns local files into asset URLs for one engine.

    The same content (sha256) goes up once per endpoint and workspace, across sessions: the
    ledger's ``uploads`` table remembers the asset. A cached asset is checked with one
    ``GET /assets/{id}`` the first time a session uses it (a 404 or a failed asset means upload
    again) and trusted for the rest of the engine.
    """

    def __init__(self, engine: RunEngine):
        self._engine = engine
        self._lock = threading.Lock()
        self._content_locks: dict[str, threading.Lock] = {}
        self._checked: dict[tuple[str, str], Asset] = {}  # (workspace, asset id) -> as verified in this session

    def upload(self, source: Any, *, file_name: str | None = None, content_type: str | None = None,
               workspace: str | None = None, input_type: str | None = None) -> Asset:
        """Check, then upload (or find in the cache) a path or bytes; returns the ready asset."""
        local = read_source(source, file_name, content_type, input_type)  # refused here: nothing was sent
        space = workspace or self._engine.catalog.workspace_id
        with self._content_lock(local.sha256):  # two threads with one file: one upload
            cached = self._cached(space, local)
            if cached is not None:
                return cached
            return self._send(space, local)

    def _content_lock(self, digest: str) -> threading.Lock:
        with self._lock:
            return self._content_locks.setdefault(digest, threading.Lock())

    def _cached(self, workspace: str, local: LocalFile) -> Asset | None:
        engine = self._engine
        row = engine.ledger.find_upload(engine.endpoint, workspace, local.sha256)
        if row is None:
            return None
        known = self._checked.get((workspace, row["asset_id"]))
        if known is not None:
            return known
        try:
            asset = engine.client.get_asset(row["asset_id"])
        except NotFoundError:
            asset = None
        if asset is None or asset.status != "ready" or not asset.url:
            engine.ledger.forget_upload(engine.endpoint, workspace, local.sha256)
            return None
        self._checked[(workspace, asset.asset_id)] = asset
        return asset

    def _send(self, workspace: str, local: LocalFile) -> Asset:
        engine = self._engine
        asset = engine.client.upload_asset(
            local.data, file_name=local.file_name, content_type=local.content_type, workspace_id=workspace,
            poll_interval=min(1.0, engine.poller.interval[0]))
        engine.ledger.remember_upload(
            endpoint=engine.endpoint, workspace_id=workspace, sha256=local.sha256, size=local.size,
            content_type=local.content_type, file_name=local.file_name, asset_id=asset.asset_id, url=asset.url,
            created_at=time.time())
        self._checked[(workspace, asset.asset_id)] = asset
        return asset

    def resolve(self, tech: Technique, inputs: Sequence[Mapping[str, Any]], workspace: str,
                upload: bool = True) -> list[dict[str, Any]]:
        """The inputs with every local file of a media input replaced by its asset URL.

        Each distinct file is uploaded once. With ``upload=False`` (a dry run) nothing is sent:
        files already in the cache show their asset URL, the others their path.
        """
        media = {i.id: i.type for i in tech.inputs if i.type in MEDIA_TYPES}
        urls: dict[str, str] = {}
        resolved = []
        for values in inputs:
            row = dict(values)
            for key, kind in media.items():
                path = local_path(row.get(key))
                if path is None:
                    continue
                name = str(path.resolve())
                if name not in urls:
                    urls[name] = self._url_for(path, workspace, kind, upload)
                row[key] = urls[name]
            resolved.append(row)
        return resolved

    def _url_for(self, path: Any, workspace: str, kind: str, upload: bool) -> str:
        if upload:
            return self.upload(path, workspace=workspace, input_type=kind).url
        local = read_source(path, input_type=kind)
        row = self._engine.ledger.find_upload(self._engine.endpoint, workspace, local.sha256)
        return row["url"] if row else str(path)
