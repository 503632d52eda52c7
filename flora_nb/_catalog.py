"""The catalog of one session: techniques by id, slug or alias (looked up once) and the default workspace."""

from __future__ import annotations

import difflib
import threading

from ._client import FloraClient
from ._errors import ConfigError, FloraError, NotFoundError
from ._models import Technique, Workspace

__all__ = ["Catalog"]


class Catalog:
    """Techniques as FLORA lists them, cached for the session, and the workspace runs are billed to.

    ``workspace`` is the one the user chose (argument or ``FLORA_WORKSPACE_ID``); without one, the
    only workspace the key can see is taken, and several are an error that lists them.
    """

    def __init__(self, client: FloraClient, workspace: str | None = None):
        self.client = client
        self.chosen_workspace = workspace
        self._workspace: str | None = None
        self._known: dict[str, Technique] = {}  # id, slug or alias -> technique
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- workspaces

    @property
    def workspace_id(self) -> str:
        """The default workspace: the one chosen, else the only one the key sees."""
        if self._workspace is None:
            self._workspace = self.chosen_workspace or self._only_workspace()
        return self._workspace

    @property
    def known_workspace(self) -> str | None:
        """The default workspace if it is known without asking FLORA (None otherwise)."""
        return self._workspace or self.chosen_workspace

    def workspaces(self) -> list[Workspace]:
        """The workspaces this key can see."""
        return self.client.workspaces()

    def _only_workspace(self) -> str:
        spaces = self.client.workspaces()
        if len(spaces) == 1:
            return spaces[0].workspace_id
        names = ", ".join(f"{w.workspace_id} ({w.name})" for w in spaces) or "none"
        raise ConfigError(
            f"Your key can see {len(spaces)} workspaces: {names}. Choose one with "
            "Flora(workspace='ws_...') or the FLORA_WORKSPACE_ID environment variable."
        )

    # ---------------------------------------------------------------- techniques

    def techniques(self, query: str | None = None) -> list[Technique]:
        """Every technique FLORA lists (all pages), remembered for later lookups."""
        found = list(self.client.techniques(query=query, workspace_id=self.chosen_workspace))
        for tech in found:
            self.remember(tech)
        return found

    def technique(self, id_or_slug: str) -> Technique:
        """One technique by id or slug (asked of FLORA once per session)."""
        key = str(id_or_slug).strip()
        cached = self.known(key)
        if cached is None:
            try:
                cached = self.client.technique(key)
            except NotFoundError as exc:
                raise self._not_found(key, exc) from None
            self.remember(cached, alias=key)
        return cached

    def known(self, key: str | None) -> Technique | None:
        """A technique this session has looked up, by id, slug or alias (no request)."""
        if not key:
            return None
        with self._lock:
            return self._known.get(key)

    def technique_id(self, key: str) -> str:
        """The technique id behind a slug this session has seen (else ``key`` itself)."""
        known = self.known(key)
        return known.technique_id if known is not None else key

    def remember(self, tech: Technique, alias: str | None = None) -> None:
        with self._lock:
            for name in (tech.technique_id, tech.slug, alias):
                if name:
                    self._known[name] = tech

    def _not_found(self, key: str, exc: NotFoundError) -> NotFoundError:
        """Say which technique was not found and which ones are close (by slug, id or name)."""
        try:
            catalog = list(self.client.techniques(workspace_id=self.chosen_workspace))
        except FloraError:
            catalog = []
        names: dict[str, str] = {}
        for tech in catalog:
            shown = tech.slug or tech.technique_id
            for alias in (tech.slug, tech.technique_id, tech.name):
                if alias:
                    names.setdefault(alias.lower(), shown)
        close = dict.fromkeys(names[m] for m in difflib.get_close_matches(key.lower(), list(names), n=3, cutoff=0.6))
        hint = f"; did you mean {' or '.join(close)}?" if close else "."
        return NotFoundError(f"No technique {key!r} in the catalog{hint} See fl.techniques() for the list.",
                             status=exc.status, code=exc.code, request_id=exc.request_id)
