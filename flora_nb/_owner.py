"""Which session wrote a ledger row, and whether that session still lives.

A start that is "in flight" in another live session must not be taken for a lost one, and a
sweep queued by a kernel that died must not wait forever. Rows carry ``host:pid:token``, where
``host`` is the host name and, on Linux, ``~`` and a digest of the boot and the process namespace:
a process id is looked up only where it means the same process (not on another machine, nor in
another container, that bears the same host name); elsewhere the ledger's lease tells.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket

__all__ = ["STALE_SECONDS", "is_alive", "new_owner", "retire"]

STALE_SECONDS = 300.0  # a start older than this, from a session we cannot see, is no longer in flight

_LIVE_TOKENS: set[str] = set()


def _where() -> str:
    """This process's place: its host name, and where /proc tells them, its boot and process namespace."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            boot = handle.read().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:  # no /proc (macOS): the host name alone
        return socket.gethostname()
    return f"{socket.gethostname()}~{hashlib.sha256(f'{boot}:{namespace}'.encode()).hexdigest()[:8]}"


def new_owner() -> str:
    """An owner tag for a new session of this process."""
    token = secrets.token_hex(6)
    _LIVE_TOKENS.add(token)
    return f"{_where()}:{os.getpid()}:{token}"


def retire(owner: str) -> None:
    """The session that holds this tag has closed."""
    _LIVE_TOKENS.discard(owner.rsplit(":", 1)[-1])


def is_alive(owner: str | None) -> bool | None:
    """True/False when we can tell (same host), None when we cannot (no tag, another host)."""
    if not owner or owner.count(":") < 2:
        return None
    host, pid_text, token = owner.rsplit(":", 2)
    here = host == _where() or ("~" not in host and host == socket.gethostname())  # the latter: rows before the digest
    if not here or not pid_text.isdigit():
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
