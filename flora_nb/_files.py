"""Local files as FLORA assets: which types and sizes FLORA takes, checked before any request.

FLORA's assets API (flora-api.md §4.13) takes images (jpeg, png, webp, gif, avif, heic, heif;
at most 150 megapixels), videos (mp4, webm, quicktime), audio (mpeg, wav, ogg) and pdf. A
multipart upload carries at most 4 MB; larger files go through a signed upload URL, which
flora_nb allows up to 50 MB (FLORA's documented limit for URL sources; the signed limit is
not published).
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import InputError

__all__ = [
    "ACCEPTED_TYPES",
    "INPUT_KINDS",
    "MAX_DIRECT_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_SIGNED_BYTES",
    "LocalFile",
    "describe",
    "file_problem",
    "image_pixels",
    "local_path",
    "read_source",
    "sniff",
]

MAX_DIRECT_BYTES = 4 * 1024 * 1024
MAX_SIGNED_BYTES = 50 * 1024 * 1024
MAX_IMAGE_PIXELS = 150_000_000
_HEAD_BYTES = 256 * 1024  # enough to find a JPEG's frame header behind its metadata

# content type -> the extension used when a name has to be made up
ACCEPTED_TYPES = {
    "image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif", "image/avif": ".avif",
    "image/heic": ".heic", "image/heif": ".heif", "video/mp4": ".mp4", "video/webm": ".webm",
    "video/quicktime": ".mov", "audio/mpeg": ".mp3", "audio/wav": ".wav", "audio/ogg": ".ogg",
    "application/pdf": ".pdf",
}
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "audio/x-wav": "audio/wav",
            "audio/wave": "audio/wav", "audio/vnd.wave": "audio/wav", "audio/mp3": "audio/mpeg",
            "application/x-pdf": "application/pdf"}
_EXTENSIONS = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
               ".gif": "image/gif", ".avif": "image/avif", ".heic": "image/heic", ".heif": "image/heif",
               ".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime",
               ".mp3": "audio/mpeg", ".wav": "audio/wav", ".ogg": "audio/ogg", ".oga": "audio/ogg",
               ".pdf": "application/pdf"}
# which kind of file each media input takes
INPUT_KINDS = {"imageUrl": "image/", "videoUrl": "video/", "audioUrl": "audio/", "documentUrl": "application/pdf"}
_KIND_WORDS = {"imageUrl": "an image", "videoUrl": "a video", "audioUrl": "an audio file", "documentUrl": "a PDF"}
_TYPES_TEXT = "images (jpeg, png, webp, gif, avif, heic, heif), videos (mp4, webm, mov), audio (mp3, wav, ogg) or pdf"


@dataclass(frozen=True)
class LocalFile:
    """A file checked and ready to upload: its bytes, name, content type and content hash."""

    data: bytes
    file_name: str
    content_type: str
    sha256: str

    @property
    def size(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"LocalFile({self.file_name!r}, {self.content_type}, {self.size} bytes)"


def local_path(value: Any) -> Path | None:
    """The local file a media input names: any ``Path``, or a string naming an existing file."""
    if isinstance(value, os.PathLike):
        return Path(value).expanduser()
    if not isinstance(value, str) or not value.strip() or value.startswith(("http://", "https://")):
        return None
    try:
        path = Path(value).expanduser()
        return path if path.is_file() else None
    except (OSError, ValueError):  # a prompt-sized string is no file name
        return None


def file_problem(path: Path, input_type: str | None = None) -> str | None:
    """Why FLORA would refuse this local file (reads only its first bytes), or None when it is fine."""
    try:
        if not path.is_file():
            return f"{str(path)!r} is not an existing file; check the path (relative paths start at {os.getcwd()})"
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(_HEAD_BYTES)
    except OSError as exc:
        return f"{str(path)!r} cannot be read ({exc.strerror or type(exc).__name__})"
    try:
        describe(head, size, path.name, None, input_type)
    except InputError as exc:
        return str(exc)
    return None


def read_source(source: Any, file_name: str | None = None, content_type: str | None = None,
                input_type: str | None = None) -> LocalFile:
    """Read and check a path or bytes; InputError (before any request) when FLORA would refuse it."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        if isinstance(source, str) and source.startswith(("http://", "https://")):
            raise InputError(f"{source!r} is a URL already: pass it as the input itself, no upload needed.")
        path = local_path(source) if not isinstance(source, str) else Path(source).expanduser()
        if path is None:
            raise InputError(f"upload() takes a file path (str or pathlib.Path) or bytes; got {type(source).__name__}.")
        problem = _path_problem(path)
        if problem:
            raise InputError(problem)
        data = path.read_bytes()
        file_name = file_name or path.name
    ctype, name = describe(data, len(data), file_name, content_type, input_type)
    return LocalFile(data, name, ctype, hashlib.sha256(data).hexdigest())


def _path_problem(path: Path) -> str | None:
    try:
        if not path.is_file():
            return f"{str(path)!r} is not an existing file; check the path (relative paths start at {os.getcwd()})."
        if path.stat().st_size > MAX_SIGNED_BYTES:  # refuse before reading it all into memory
            return _too_big(path.name, path.stat().st_size)
    except OSError as exc:
        return f"{str(path)!r} cannot be read ({exc.strerror or type(exc).__name__})."
    return None


def describe(head: bytes, size: int, file_name: str | None, content_type: str | None,
             input_type: str | None = None) -> tuple[str, str]:
    """The content type and file name FLORA will get; InputError when it would refuse the file."""
    label = repr(file_name) if file_name else "these bytes"
    if size == 0:
        raise InputError(f"{label} is empty (0 bytes); pass a non-empty image, video, audio or PDF file.")
    if size > MAX_SIGNED_BYTES:
        raise InputError(_too_big(file_name or "the data", size))
    ctype = _content_type(head, file_name, content_type)
    if ctype is None:
        raise InputError(f"cannot tell what kind of file {label} is; pass content_type='image/png' (or the right "
                         f"type) or a file_name with its extension. FLORA takes {_TYPES_TEXT}.")
    if ctype not in ACCEPTED_TYPES:
        raise InputError(f"FLORA does not take {ctype} files ({label}); it takes {_TYPES_TEXT}. Convert the file "
                         "first (for example to png, mp4, mp3 or pdf).")
    if input_type in INPUT_KINDS and not ctype.startswith(INPUT_KINDS[input_type]):
        raise InputError(f"{label} is {ctype}, but a {input_type} input takes {_KIND_WORDS[input_type]}.")
    pixels = image_pixels(head) if ctype.startswith("image/") else None
    if pixels is not None and pixels > MAX_IMAGE_PIXELS:
        raise InputError(f"{label} has {pixels / 1e6:.0f} megapixels; FLORA takes images up to "
                         f"{MAX_IMAGE_PIXELS // 1_000_000} MP. Scale it down first.")
    name = Path(file_name).name if file_name else ""  # a name, never a path of this machine
    return ctype, name or "upload" + ACCEPTED_TYPES[ctype]


def _too_big(name: str, size: int) -> str:
    return (f"{name} is {size / 1024 / 1024:.1f} MB; FLORA takes local files up to "
            f"{MAX_SIGNED_BYTES // 1024 // 1024} MB. Compress or shorten it, or host it and pass its https URL.")


def _content_type(head: bytes, file_name: str | None, content_type: str | None) -> str | None:
    if content_type:
        plain = content_type.split(";")[0].strip().lower()
        return _ALIASES.get(plain, plain)
    if file_name:
        suffix = Path(file_name).suffix.lower()
        guessed = _EXTENSIONS.get(suffix) or mimetypes.guess_type(file_name)[0]
        if guessed:
            return _ALIASES.get(guessed, guessed)
    return sniff(head)


def sniff(head: bytes) -> str | None:
    """The content type a file's first bytes announce (accepted types only), or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if head[:4] == b"RIFF" and head[8:12] in (b"WEBP", b"WAVE"):
        return "image/webp" if head[8:12] == b"WEBP" else "audio/wav"
    if head[4:8] == b"ftyp":
        return _ftyp(head[8:12])
    return None


def _ftyp(brand: bytes) -> str:
    if brand in (b"avif", b"avis"):
        return "image/avif"
    if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis"):
        return "image/heic"
    if brand in (b"mif1", b"msf1"):
        return "image/heif"
    return "video/quicktime" if brand == b"qt  " else "video/mp4"


def image_pixels(head: bytes) -> int | None:
    """Width x height from a PNG, GIF, JPEG or WebP header, or None when it cannot be read."""
    try:
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
        elif head[:6] in (b"GIF87a", b"GIF89a"):
            width, height = struct.unpack("<HH", head[6:10])
        elif head.startswith(b"\xff\xd8"):
            return _jpeg_pixels(head)
        elif head[:4] == b"RIFF" and head[8:12] == b"WEBP" and head[12:16] == b"VP8X":
            width = int.from_bytes(head[24:27], "little") + 1
            height = int.from_bytes(head[27:30], "little") + 1
        else:
            return None
    except struct.error:
        return None
    return width * height


def _jpeg_pixels(head: bytes) -> int | None:
    at = 2
    while at + 9 < len(head):
        if head[at] != 0xFF:
            return None
        marker = head[at + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            at += 2
            continue
        length = struct.unpack(">H", head[at + 2:at + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame segment
            height, width = struct.unpack(">HH", head[at + 5:at + 9])
            return width * height
        at += 2 + length
    return None
