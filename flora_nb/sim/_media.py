"""Output files in pure Python: PNG, WAV, PDF, text, plus the committed MP4 clips.

Everything is derived from a digest of (seed, technique, inputs, output id), so the same
inputs give the same bytes and different inputs give visibly different files. Each says plainly
that it is a simulated placeholder: a caption on images, a line in documents and texts, a
comment in audio files (the MP4 clips are ffmpeg test patterns, placeholders at a glance).
"""

from __future__ import annotations

import colorsys
import functools
import hashlib
import io
import math
import struct
import wave
import zlib
from importlib import resources

from ._state import canonical_inputs

# Output type -> (file extension, Content-Type). Text outputs carry their text in `url`.
FILE_TYPES = {
    "imageUrl": ("png", "image/png"),
    "videoUrl": ("mp4", "video/mp4"),
    "audioUrl": ("wav", "audio/wav"),
    "documentUrl": ("pdf", "application/pdf"),
}
IMAGE_SIZE = 256
SAMPLE_RATE = 16000
PLACEHOLDER = "simulated placeholder"
PLACEHOLDER_NOTE = "Simulated placeholder: made by the flora_nb simulator, not by FLORA."


def output_digest(seed: int, technique_id: str, inputs: dict[str, str], output_id: str) -> bytes:
    """The 32 bytes every property of one output is drawn from."""
    material = canonical_inputs(technique_id, inputs, seed) + output_id.encode()
    return hashlib.sha256(material).digest()


@functools.lru_cache(maxsize=128)
def render(output_type: str, digest: bytes, title: str, lines: tuple[str, ...], output_id: str = "",
           subject: str = "") -> bytes:
    """The file for a media output type (cached: polling clients fetch the same URL often)."""
    if output_type == "imageUrl":
        return png(digest, caption=PLACEHOLDER)
    if output_type == "audioUrl":
        return wav(digest, comment=PLACEHOLDER_NOTE)
    if output_type == "documentUrl":
        pool = _DOCUMENT_POOLS.get(output_id, _NOTES)
        body = (line.format(subject=subject) for line in text_lines(digest, 4, pool))
        return pdf(title, [PLACEHOLDER_NOTE, "", *lines, *body])
    if output_type == "videoUrl":
        return mp4(digest)
    raise ValueError(f"no file for output type {output_type!r}")


# -- PNG ---------------------------------------------------------------------------------


def _palette(digest: bytes) -> list[bytes]:
    """256 RGB colours running through three hues taken from the digest, and back."""
    hue = digest[1] / 255
    shifts = (0.0, 0.18 + digest[8] / 800, 0.5 + digest[9] / 1000)
    stops = [
        colorsys.hsv_to_rgb(
            (hue + shift) % 1.0, 0.45 + digest[2 + i] / 510, 0.55 + digest[5 + i] / 570
        )
        for i, shift in enumerate(shifts)
    ]
    colours = []
    for i in range(256):
        t = (i if i < 128 else 255 - i) / 127.5 * 2  # ping-pong 0..2 hides wrap-around seams
        a, b = (stops[0], stops[1]) if t < 1 else (stops[1], stops[2])
        f = t if t < 1 else t - 1
        colours.append(bytes(int(255 * (a[c] + (b[c] - a[c]) * f)) for c in range(3)))
    return colours


def _levels(digest: bytes) -> list[list[int]]:
    """A 256x256 grid of palette indices in one of six pattern families."""
    n = IMAGE_SIZE
    kind = digest[0] % 6
    freq = 1.5 + digest[10] / 40
    cx, cy = 40 + digest[11] * 176 // 255, 40 + digest[12] * 176 // 255
    angle = digest[13] / 255 * math.pi
    ca, sa = math.cos(angle) * freq, math.sin(angle) * freq
    rows = []
    for y in range(n):
        dy = y - cy
        if kind == 0:  # rings
            row = [int(math.hypot(x - cx, dy) * freq) & 255 for x in range(n)]
        elif kind == 1:  # stripes
            row = [int(x * ca + y * sa) & 255 for x in range(n)]
        elif kind == 2:  # diamonds
            row = [int((abs(x - cx) + abs(dy)) * freq) & 255 for x in range(n)]
        elif kind == 3:  # plaid
            wy = 60 * math.sin(y * freq / 13)
            row = [int(128 + 60 * math.sin(x * freq / 9) + wy) & 255 for x in range(n)]
        elif kind == 4:  # waves
            phase = 3 * math.sin(y * freq / 70)
            row = [int(128 + 127 * math.sin(x * freq / 60 + phase)) & 255 for x in range(n)]
        else:  # spiral
            # 40.7 = 256 / 2π: one palette cycle per turn around the centre.
            row = [
                int(math.atan2(dy, x - cx) * 40.7 + math.hypot(x - cx, dy) * freq) & 255
                for x in range(n)
            ]
        rows.append(row)
    return rows


def png(digest: bytes, caption: str = "") -> bytes:
    """A 256x256 RGB PNG whose pattern and colours come from ``digest``, with ``caption`` along its foot."""
    palette = _palette(digest)
    rows = [b"".join(palette[i] for i in row) for row in _levels(digest)]
    if caption:
        banner = _banner(caption)
        rows[-len(banner):] = banner
    raw = b"".join(b"\x00" + row for row in rows)
    header = struct.pack(">IIBBBBB", IMAGE_SIZE, IMAGE_SIZE, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + _chunk(b"IEND", b"")
    )


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


# 5x7 capitals for captions, one string of five bits per row; unknown characters draw blank.
_GLYPHS = {
    "A": "01110 10001 10001 11111 10001 10001 10001", "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11110 10001 10001 10001 10001 10001 11110", "E": "11111 10000 10000 11110 10000 10000 11111",
    "H": "10001 10001 10001 11111 10001 10001 10001", "I": "01110 00100 00100 00100 00100 00100 01110",
    "L": "10000 10000 10000 10000 10000 10000 11111", "M": "10001 11011 10101 10101 10001 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110", "P": "11110 10001 10001 11110 10000 10000 10000",
    "R": "11110 10001 10001 11110 10100 10010 10001", "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100", "U": "10001 10001 10001 10001 10001 10001 01110",
}
_INK, _PAPER = b"\xff\xff\xff", b"\x1e\x1e\x1e"


def _banner(text: str, scale: int = 2, pad: int = 3) -> list[bytes]:
    """RGB rows of a dark strip with ``text`` in white capitals, centred, as wide as the image."""
    glyphs = [_GLYPHS.get(ch, "00000 " * 6 + "00000").split() for ch in text.upper()]
    width = len(glyphs) * 6 * scale - scale
    left = max(0, (IMAGE_SIZE - width) // 2)
    strip = []
    for y in range(7):
        bits = "0".join(glyph[y] for glyph in glyphs)
        pixels = "".join(bit * scale for bit in bits)[:IMAGE_SIZE - left]
        line = ("0" * left + pixels).ljust(IMAGE_SIZE, "0")
        strip += [b"".join(_INK if bit == "1" else _PAPER for bit in line)] * scale
    blank = _PAPER * IMAGE_SIZE
    return [blank] * pad + strip + [blank] * pad


# -- WAV ---------------------------------------------------------------------------------

_CHORDS = ((0, 4, 7), (0, 3, 7), (0, 5, 7), (0, 4, 7, 10))


def wav(digest: bytes, seconds: float = 1.0, comment: str = "") -> bytes:
    """A mono 16 kHz 16-bit chord whose root and quality come from ``digest`` (``comment``: its INFO note)."""
    root = 48 + digest[0] % 24  # MIDI C3..B4
    freqs = [440.0 * 2 ** ((root + step - 69) / 12) for step in _CHORDS[digest[1] % len(_CHORDS)]]
    count = int(SAMPLE_RATE * seconds)
    decay = 2.0 + digest[2] / 64
    frames = bytearray()
    for i in range(count):
        t = i / SAMPLE_RATE
        envelope = min(1.0, t / 0.02) * math.exp(-decay * t)
        value = sum(math.sin(2 * math.pi * f * t) for f in freqs) / len(freqs)
        frames += struct.pack("<h", int(value * envelope * 28000))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(bytes(frames))
    return _with_comment(buf.getvalue(), comment) if comment else buf.getvalue()


def _with_comment(riff: bytes, comment: str) -> bytes:
    """The WAV with a LIST/INFO chunk (ICMT: ``comment``) added, which players show as its comment."""
    text = comment.encode("ascii", "replace") + b"\x00"
    text += b"\x00" * (len(text) % 2)
    info = b"INFO" + b"ICMT" + struct.pack("<I", len(text)) + text
    body = riff[8:] + b"LIST" + struct.pack("<I", len(info)) + info
    return b"RIFF" + struct.pack("<I", len(body)) + body


# -- PDF ---------------------------------------------------------------------------------


def _pdf_text(text: str) -> str:
    # Helvetica with WinAnsiEncoding covers cp1252; anything else becomes '?'.
    latin = text.encode("cp1252", "replace").decode("cp1252")
    return latin.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _wrap(line: str, width: int = 88) -> list[str]:
    words, out, current = line.split(), [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > width:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return [*out, current] if current else out or [""]


def pdf(title: str, lines: list[str]) -> bytes:
    """A one-page A4 PDF with a title and wrapped lines of Helvetica text."""
    body = [f"BT /F1 20 Tf 56 780 Td ({_pdf_text(title)}) Tj ET"]
    y = 744
    for line in (part for raw in lines for part in _wrap(raw)):
        if y < 60:
            break
        body.append(f"BT /F1 11 Tf 56 {y} Td ({_pdf_text(line)}) Tj ET")
        y -= 16
    stream = "\n".join(body).encode("cp1252")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    return _pdf_file(objects)


def _pdf_file(objects: list[bytes]) -> bytes:
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


# -- MP4 ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _clips() -> tuple[bytes, ...]:
    folder = resources.files("flora_nb.sim") / "assets"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".mp4"))
    return tuple((folder / name).read_bytes() for name in names)


def mp4(digest: bytes) -> bytes:
    """One of the committed clips (ffmpeg test patterns), picked by ``digest``."""
    clips = _clips()
    return clips[int.from_bytes(digest[:4], "big") % len(clips)]


# -- text --------------------------------------------------------------------------------

_SENTENCES = (
    "The composition leads the eye from the lower left into the focal point.",
    "Colour temperature is consistent; a cooler accent would add depth.",
    "Typography feels confident but the tracking on the headline is tight.",
    "Negative space is doing real work here; keep it.",
    "The contrast between foreground and background could be pushed further.",
    "Edges are crisp, though the horizon sits a little too close to the centre.",
    "The palette is cohesive and reads well at thumbnail size.",
    "Consider a stronger silhouette for the main subject.",
    "Lighting direction is clear and motivates the shadows well.",
    "The grid is respected; one deliberate break would add energy.",
    "Texture in the midtones gives the piece a tactile quality.",
    "The hierarchy is clear: headline, image, call to action.",
)


# Lines of a jingle; {subject} is what the jingle is about.
_LYRICS = (
    "Wake up, wake up, it's {subject} time",
    "Every morning tastes a little more like {subject}",
    "Sing it loud and sing it clear",
    "Round the corner, down the street",
    "Nothing else will ever do",
    "Bright and easy, sweet and new",
    "Tell your neighbours, tell your friends",
    "Once you try it, the good day never ends",
    "Clap your hands and stamp your feet",
    "Life is better with a beat",
)
# Lines of a one-page brand book; {subject} is the brand.
_BRAND = (
    "{subject} speaks in short, warm sentences and never shouts.",
    "Primary palette: deep forest green, warm sand and one bright accent for calls to action.",
    "Typography: a geometric sans for headlines, a humanist sans for body text.",
    "The logo keeps clear space equal to the height of its first letter on every side.",
    "Photography is natural light, close crops and real hands at work.",
    "Never stretch, outline or recolour the logo outside the approved palette.",
    "Voice: confident, plain-spoken, a little playful; no jargon.",
    "Minimum logo size: 24 px on screen, 10 mm in print.",
)
# Neutral notes for text and document outputs of techniques the simulator has no voice for.
_NOTES = (
    "Generated by the FLORA simulator from the inputs above.",
    "The same inputs always give the same result here.",
    "Change one input to see the result change.",
    "Outputs of the simulator are placeholders for the real technique's.",
)
_TEXT_POOLS = {"critique": _SENTENCES, "lyrics": _LYRICS}
_DOCUMENT_POOLS = {"brand_book": _BRAND}


def text_lines(digest: bytes, count: int, pool: tuple[str, ...] = _SENTENCES) -> list[str]:
    """``count`` distinct lines of ``pool`` chosen by ``digest``."""
    picked: list[str] = []
    for byte in digest:
        sentence = pool[byte % len(pool)]
        if sentence not in picked:
            picked.append(sentence)
        if len(picked) == min(count, len(pool)):
            break
    return picked


def text_output(technique_name: str, inputs: dict[str, str], digest: bytes, output_id: str = "critique") -> str:
    """A text output in the voice of its output (a critique, lyrics, or neutral notes)."""
    subject = next(iter(inputs.values()), "")
    if output_id == "lyrics":
        return lyrics(subject, inputs.get("style", ""), digest)
    pool = _TEXT_POOLS.get(output_id, _NOTES)
    head = f"{technique_name} on {subject[:80]!r}:" if subject else f"{technique_name}:"
    return " ".join([f"[{PLACEHOLDER}]", head, *text_lines(digest, 3, pool)])


def lyrics(subject: str, style: str, digest: bytes) -> str:
    """A verse and a chorus about ``subject``."""
    about = subject[:60].strip() or "this"
    verse = [line.format(subject=about) for line in text_lines(digest, 4, _LYRICS)]
    hook = f"{about.capitalize()}, {about}, oh-oh {about}!"
    head = f"[Verse{' - ' + style[:40] if style else ''}]"
    return "\n".join([f"[{PLACEHOLDER}]", head, *verse, "", "[Chorus]", hook, verse[0]])
