"""Which session wrote a ledger row, and whether that session still lives.

A start that is "in flight" in another live session must not be taken for a lost one, and a
sweep queued by a kernel that died must not wait forever. Rows carry ``host:pid:token``.
"""

from __future__ import annotations

import os
import secrets
import socket

__all__ = ["STALE_SECONDS", "is_alive", "new_owner", "retire"]

STALE_SECONDS = 300.0  # a start older than this, from a session we cannot see, is no longer in flight

_LIVE_TOKENS: set[str] = set()


def new_owner() -> str:
    """An owner tag for a new session of this process."""
    token = secrets.token_hex(6)
    _LIVE_TOKENS.add(token)
    return f"{socket.gethostname()}:{os.getpid()}:{token}"


def retire(owner: str) -> None:
    """The session that holds this tag has closed."""
    _LIVE_TOKENS.discard(owner.rsplit(":", 1)[-1])


def is_alive(owner: str | None) -> bool | None:
    """True/False when we can tell (same host), None when we cannot (no tag, another host)."""
    if not owner or owner.count(":") < 2:
        return None
    host, pid_text, token = owner.rsplit(":", 2)
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    if pid == os.getpid():
        return token in _LIVE_TOKENS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return not _is_zombie(pid)
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed kernel nobody has reaped still answers kill(pid, 0), but it is dead."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:  # no /proc (macOS) or it just went away: kill(pid, 0) had the last word
        return False
    fields = stat.rsplit(")", 1)[-1].split()  # the command name may hold spaces and ')'
    return bool(fields) and fields[0] in ("Z", "X")
