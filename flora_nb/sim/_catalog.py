"""The simulator's technique catalog: built-in techniques, lookup by id or slug, search."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

# Keys a catalog entry may carry that FLORA never sends; they drive the simulation only.
SIM_ONLY_FIELDS = ("duration_seconds", "duration_spread", "charge_jitter", "charge")
IO_TYPES = ("imageUrl", "videoUrl", "audioUrl", "text", "documentUrl")
DEFAULT_DURATION = 10.0
# How far a built-in technique's runs stray from their estimate (a fraction), drawn per run: real
# generations of the same inputs take different times, so repeats of a sweep are distinct samples.
# Poster Studio keeps an exact duration: it is the simulator's fixed yardstick for timing tests.
NATURAL_SPREAD = 0.25


def _io(
    id_: str, name: str, type_: str, description: str, optional: bool = False
) -> dict[str, Any]:
    field: dict[str, Any] = {"id": id_, "name": name, "type": type_, "description": description}
    if optional:
        field["optional"] = True
    return field


BUILTIN_TECHNIQUES: list[dict[str, Any]] = [
    {
        "technique_id": "tech_a1poster",
        "slug": "poster-studio",
        "name": "Poster Studio",
        "description": "Text-to-image: turns a one-line prompt into a bold, print-ready poster.",
        "run_cost": 0.04,
        "duration_seconds": 12,
        "inputs": [_io("prompt", "Prompt", "text", "What the poster shows, in plain words.")],
        "outputs": [_io("image", "Poster", "imageUrl", "A 256x256 PNG poster.")],
    },
    {
        "technique_id": "tech_b2relight",
        "slug": "product-relight",
        "name": "Product Relight",
        "description": "Relights a product photo with studio lighting of your choice.",
        "run_cost": 0.08,
        "duration_seconds": 18,
        "duration_spread": NATURAL_SPREAD,
        "inputs": [
            _io(
                "product_image",
                "Product photo",
                "imageUrl",
                "Photo of the product, any background.",
            ),
            _io(
                "lighting",
                "Lighting",
                "text",
                "e.g. 'golden hour', 'hard rim light'.",
                optional=True,
            ),
        ],
        "outputs": [_io("image", "Relit photo", "imageUrl", "The relit product shot.")],
    },
    {
        "technique_id": "tech_c3cctv",
        "slug": "cctv-cam",
        "name": "CCTV Cam",
        "description": "Animates a still scene as grainy security-camera footage with a timestamp.",
        "run_cost": 0.35,
        "duration_seconds": 40,
        "duration_spread": NATURAL_SPREAD,
        "inputs": [
            _io("scene_image", "Scene", "imageUrl", "The scene the camera watches."),
            _io(
                "timestamp_text",
                "Timestamp",
                "text",
                "Overlay text, e.g. '03:14 CAM 2'.",
                optional=True,
            ),
        ],
        "outputs": [_io("video", "Footage", "videoUrl", "A short MP4 clip.")],
    },
    {
        "technique_id": "tech_d4motion",
        "slug": "image-to-motion",
        "name": "Image to Motion",
        "description": "Generates a short video from a prompt, optionally from a key frame.",
        "run_cost": 0.90,
        "duration_seconds": 60,
        "duration_spread": NATURAL_SPREAD,
        "charge_jitter": 0.25,
        "inputs": [
            _io("prompt", "Prompt", "text", "The motion to generate."),
            _io(
                "start_frame", "Start frame", "imageUrl", "First frame of the clip.", optional=True
            ),
        ],
        "outputs": [_io("video", "Clip", "videoUrl", "A short MP4 clip.")],
    },
    {
        "technique_id": "tech_e5foley",
        "slug": "foley-sound",
        "name": "Foley Sound Designer",
        "description": "Listens to a video and designs matching foley sound effects.",
        "run_cost": 0.12,
        "duration_seconds": 20,
        "duration_spread": NATURAL_SPREAD,
        "inputs": [
            _io("video", "Video", "videoUrl", "The clip to score."),
            _io("mood", "Mood", "text", "e.g. 'tense', 'playful'.", optional=True),
        ],
        "outputs": [_io("audio", "Sound effects", "audioUrl", "A WAV file.")],
    },
    {
        "technique_id": "tech_f6critique",
        "slug": "art-directors-critique",
        "name": "Art Director's Critique",
        "description": "Written critique of an image's composition, colour and typography.",
        "run_cost": 0.02,
        "duration_seconds": 6,
        "duration_spread": NATURAL_SPREAD,
        "inputs": [
            _io("image", "Image", "imageUrl", "The work to critique."),
            _io("brief", "Brief", "text", "What the work is meant to achieve.", optional=True),
        ],
        "outputs": [_io("critique", "Critique", "text", "A few paragraphs of feedback.")],
    },
    {
        "technique_id": "tech_g7brandbook",
        "slug": "brand-book",
        "name": "Brand Book Builder",
        "description": "Builds a one-page brand book PDF and a mood board from a brand name.",
        "run_cost": 0.30,
        "duration_seconds": 30,
        "duration_spread": NATURAL_SPREAD,
        "charge_jitter": 0.10,
        "inputs": [
            _io("brand_name", "Brand name", "text", "The brand to design for."),
            _io("tagline", "Tagline", "text", "Optional tagline.", optional=True),
            _io("logo", "Logo", "imageUrl", "Existing logo to build around.", optional=True),
        ],
        "outputs": [
            _io("brand_book", "Brand book", "documentUrl", "A one-page PDF."),
            _io("moodboard", "Mood board", "imageUrl", "A PNG mood board."),
        ],
    },
    {
        "technique_id": "tech_h8jingle",
        "slug": "jingle-writer",
        "name": "Jingle Writer",
        "description": "Writes and hums a short jingle: lyrics as text plus an audio sketch.",
        "run_cost": 0.06,
        "duration_seconds": 15,
        "duration_spread": NATURAL_SPREAD,
        "inputs": [
            _io("prompt", "Prompt", "text", "What the jingle is about."),
            _io("style", "Style", "text", "e.g. 'ukulele', 'synthwave'.", optional=True),
        ],
        "outputs": [
            _io("audio", "Jingle", "audioUrl", "A WAV sketch."),
            _io("lyrics", "Lyrics", "text", "The words."),
        ],
    },
    {
        "technique_id": "tech_i9storyboard",
        "slug": "storyboard-frames",
        "name": "Storyboard Frames",
        "description": "Turns a short script into two storyboard frames in a chosen style.",
        "run_cost": 0.10,
        "duration_seconds": 24,
        "duration_spread": NATURAL_SPREAD,
        "inputs": [
            _io("script", "Script", "text", "One or two sentences of action."),
            _io("style", "Style", "text", "e.g. 'pencil sketch', 'noir'.", optional=True),
        ],
        "outputs": [
            _io("frame_1", "Frame 1", "imageUrl", "Opening frame."),
            _io("frame_2", "Frame 2", "imageUrl", "Closing frame."),
        ],
    },
]


@dataclass(frozen=True)
class TechniqueSpec:
    """One technique: what FLORA shows (``public``) plus how the simulator runs it."""

    public: dict[str, Any]
    duration_seconds: float
    charge_jitter: float
    charge: float | None = None  # what a run is charged, when not its listed run_cost (FIELD: quotes run low)
    duration_spread: float = 0.0  # each run takes duration_seconds x (1 ± up to this), drawn per run

    @property
    def technique_id(self) -> str:
        return str(self.public["technique_id"])

    @property
    def name(self) -> str:
        return str(self.public["name"])

    @property
    def run_cost(self) -> float:
        return float(self.public["run_cost"])

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return list(self.public["inputs"])

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return list(self.public["outputs"])

    def view(self) -> dict[str, Any]:
        """The Technique object as the API returns it (a fresh copy callers may mutate)."""
        return copy.deepcopy(self.public)


def _spec(entry: dict[str, Any]) -> TechniqueSpec:
    tid = entry.get("technique_id")
    if not isinstance(tid, str) or not tid.startswith("tech_"):
        raise ValueError(f"catalog entry needs a technique_id starting with tech_: {tid!r}")
    for key in ("name", "run_cost", "inputs", "outputs"):
        if key not in entry:
            raise ValueError(f"catalog entry {tid} lacks {key!r}")
    for field in [*entry["inputs"], *entry["outputs"]]:
        if field.get("type") not in IO_TYPES:
            raise ValueError(f"catalog entry {tid}: field {field.get('id')!r} has bad type")
    public = {k: copy.deepcopy(v) for k, v in entry.items() if k not in SIM_ONLY_FIELDS}
    return TechniqueSpec(
        public=public,
        duration_seconds=float(entry.get("duration_seconds", DEFAULT_DURATION)),
        charge_jitter=float(entry.get("charge_jitter", 0.0)),
        charge=None if entry.get("charge") is None else float(entry["charge"]),
        duration_spread=_spread(entry),
    )


def _spread(entry: dict[str, Any]) -> float:
    spread = float(entry.get("duration_spread", 0.0))
    if not 0.0 <= spread < 1.0:
        raise ValueError(f"catalog entry {entry['technique_id']}: duration_spread must be >= 0 and < 1, got {spread!r}")
    return spread


class Catalog:
    """Techniques in a fixed order, addressable by ``tech_`` id or slug."""

    def __init__(self, entries: list[dict[str, Any]] | None = None) -> None:
        self._specs = [_spec(e) for e in (BUILTIN_TECHNIQUES if entries is None else entries)]
        self._by_key: dict[str, TechniqueSpec] = {}
        for spec in self._specs:
            self._by_key[spec.technique_id] = spec
            slug = spec.public.get("slug")
            if isinstance(slug, str) and slug:
                self._by_key.setdefault(slug, spec)

    def get(self, id_or_slug: str) -> TechniqueSpec | None:
        """The technique with this id or slug, or None."""
        return self._by_key.get(id_or_slug)

    def search(self, query: str | None) -> list[TechniqueSpec]:
        """Techniques whose name or description contains every word of ``query`` (any case)."""
        words = (query or "").lower().split()
        if not words:
            return list(self._specs)
        found = []
        for spec in self._specs:
            haystack = f"{spec.name} {spec.public.get('description', '')}".lower()
            if all(word in haystack for word in words):
                found.append(spec)
        return found
