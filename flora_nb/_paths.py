"""Files flora_nb writes: names made from server data, kept inside their directory; private folders.

Output ids, run ids and URLs come from the server. They never become a path as they are: every
part of a file name goes through ``safe_name`` (no separators, no dots, no control characters),
the extension comes from a fixed list for the output's type, and the result must land directly
inside the directory it was meant for.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

from ._errors import InputError

__all__ = ["OUTPUT_EXTENSIONS", "extension_for", "output_path", "private_dir", "safe_name"]

# The first extension of each type is used when the URL's own is not on the list.
OUTPUT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "imageUrl": (".png", ".jpg", ".jpeg", ".webp", ".gif"),
    "videoUrl": (".mp4", ".webm", ".mov"),
    "audioUrl": (".wav", ".mp3", ".ogg", ".m4a", ".flac"),
    "documentUrl": (".pdf",),
    "text": (".txt",),
}
_FALLBACK = (".bin",)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_name(*parts: object, limit: int = 120) -> str:
    """A file name stem from untrusted parts: letters, digits, ``_`` and ``-`` only."""
    cleaned = [_UNSAFE.sub("_", str(p)).strip("_-") for p in parts if p is not None]
    name = "_".join(c for c in cleaned if c)[:limit].strip("_-")
    return name or "output"


def extension_for(output_type: str, url: str = "") -> str:
    """The URL's extension if it is on the list for ``output_type``, else the type's usual one."""
    allowed = OUTPUT_EXTENSIONS.get(output_type, _FALLBACK)
    suffix = os.path.splitext(urlsplit(url).path if "://" in url else "")[1].lower()
    return suffix if suffix in allowed else allowed[0]


def output_path(directory: str | os.PathLike[str], parts: Iterable[object], extension: str,
                taken: set[Path] | None = None) -> Path:
    """``directory/<safe name><extension>``, never outside ``directory``; numbered if in ``taken``."""
    folder = Path(directory)
    if extension not in {e for exts in OUTPUT_EXTENSIONS.values() for e in exts} | set(_FALLBACK):
        raise InputError(f"refusing the file extension {extension!r}")
    stem = safe_name(*parts)
    path, number = folder / f"{stem}{extension}", 1
    while taken is not None and path in taken:
        number += 1
        path = folder / f"{stem}_{number}{extension}"
    if path.resolve().parent != folder.resolve():  # belt and braces: safe_name has no separators
        raise InputError(f"refusing to write {path} outside {folder}")
    if taken is not None:
        taken.add(path)
    return path


def private_dir(path: Path, tighten: bool = False) -> Path:
    """Create ``path`` readable by this user only (0700); ``tighten`` also fixes an existing one."""
    if not path.exists():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask; be exact
    elif tighten and path.is_dir() and stat.S_IMODE(path.stat().st_mode) & 0o077:
        try:
            os.chmod(path, 0o700)
        except PermissionError:  # not ours to change: leave it
            pass
    return path
