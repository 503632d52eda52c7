"""API keys and the workspaces (each with its default project) they may use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEMO_WORKSPACE = "ws_sim_demo"
PRIVATE_WORKSPACE = "ws_sim_private"
_BUILTIN_NAMES = {DEMO_WORKSPACE: "Demo Studio", PRIVATE_WORKSPACE: "Private Team"}


@dataclass(frozen=True)
class Workspace:
    """A workspace and the project its technique runs land in."""

    workspace_id: str
    name: str
    role: str
    project_id: str
    created_at_ms: int

    def view(self) -> dict[str, Any]:
        """The Workspace object as the API returns it."""
        return {
            "workspace_id": self.workspace_id,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at_ms,
        }


def _project_for(workspace_id: str) -> str:
    return "prj_" + workspace_id.removeprefix("ws_")


class Accounts:
    """Which key may use which workspace; read-only after construction, so no lock."""

    def __init__(
        self,
        api_keys: tuple[str, ...],
        key_workspaces: dict[str, list[str]] | None,
        created_at_ms: int,
    ) -> None:
        mapping = dict(key_workspaces or {})
        keys = list(dict.fromkeys([*api_keys, *mapping]))
        if not keys:
            raise ValueError("the simulator needs at least one API key")
        self.keys = tuple(keys)
        self._grants = {k: tuple(mapping.get(k) or [DEMO_WORKSPACE]) for k in keys}
        names = dict(_BUILTIN_NAMES)
        for ws in (w for grant in self._grants.values() for w in grant):
            if not ws.startswith("ws_"):
                raise ValueError(f"workspace ids start with ws_: {ws!r}")
            names.setdefault(ws, f"Workspace {ws.removeprefix('ws_')}")
        self._workspaces = {
            ws: Workspace(ws, name, "owner", _project_for(ws), created_at_ms)
            for ws, name in names.items()
        }

    def grants(self, key: str | None) -> tuple[str, ...] | None:
        """Workspaces the key may use (first = its default), or None for an unknown key."""
        return self._grants.get(key) if key is not None else None

    def workspace(self, workspace_id: str) -> Workspace | None:
        """The workspace with this id, or None."""
        return self._workspaces.get(workspace_id)
