"""The docs' examples run as a newcomer runs them, and the docs' links and words hold.

For each page under ``docs/`` (and README.md, in ``tests/test_readme.py``), every block fenced ```python is run,
in order, in the page's own IPython ``InteractiveShell`` (so ``%flora`` lines and ``%%flora`` cells work too), the
way a newcomer who copies the page top to bottom runs it:

- no ``FLORA_API_KEY``, ``FLORA_BASE_URL`` or ``FLORA_WORKSPACE_ID`` in the environment, and simulated accounts
  kept as by default (``FLORA_NB_SIM_PERSIST`` unset): each page starts from the built-in simulator itself
  (``%flora connect --sim``, ``fnb.Flora.simulated()`` or a ``FloraSimulator``);
- no network: a connection to, or a name lookup of, anything but this machine fails the page;
- ``FLORA_NB_HOME`` a folder of the page's own (its ledger and simulated account) and the working directory an
  empty folder: the examples make the files they use.

Blocks that cannot run as written (shell commands, program output) are fenced ```bash or ```text; a ```python
block whose first line is ``# not run: <why>`` (e.g. "needs a FLORA account") is skipped too, and
``test_most_examples_run`` keeps that set small. ``test_links_resolve`` checks every relative link and anchor of
README.md and the docs, and ``test_no_placeholders`` that no placeholder owner or address is left in them.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
NOT_RUN = "# not run:"
RELIABILITY = DOCS / "reliability.md"  # a report of what was tried, with program output fenced without a language
MAX_NOT_RUN = 3  # across README and every page: examples about a real FLORA account, and nothing else


def doc_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def all_pages() -> list[Path]:
    return [README, *doc_pages()]


def page_id(page: Path) -> str:
    return str(page.relative_to(DOCS if page.is_relative_to(DOCS) else ROOT))


@dataclass
class Block:
    line: int
    lang: str
    code: str


def blocks(page: Path, kind: str | None = None) -> list[Block]:
    """Every fenced block of a page (or those of one language), with the line its fence opens on."""
    text = page.read_text(encoding="utf-8")
    found = [Block(text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)) for m in FENCE.finditer(text)]
    return [b for b in found if kind is None or b.lang == kind]


def runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page, "python") if not b.code.startswith(NOT_RUN)]


# ------------------------------------------------------------------------------------------ a newcomer's machine

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "", None}


class NoNetwork:
    """Refuses (and remembers) any connection to, or lookup of, a host that is not this machine."""

    def __init__(self) -> None:
        self.refused: list[str] = []

    def _local(self, host: Any) -> bool:
        if host in LOOPBACK_NAMES or host in (socket.gethostname(), socket.getfqdn()):
            return True
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return False

    def check(self, host: Any) -> None:
        if not self._local(host):
            self.refused.append(str(host))
            raise OSError(f"the docs' examples must work offline; they tried to reach {host}")

    def install(self, mp: pytest.MonkeyPatch) -> None:
        getaddrinfo, connect, connect_ex = socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex

        def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            self.check(host.decode() if isinstance(host, bytes) else host)
            return getaddrinfo(host, *args, **kwargs)

        def guarded_connect(sock: socket.socket, address: Any) -> Any:
            if isinstance(address, tuple):
                self.check(address[0])
            return connect(sock, address)

        def guarded_connect_ex(sock: socket.socket, address: Any) -> Any:
            if isinstance(address, tuple):
                self.check(address[0])
            return connect_ex(sock, address)

        mp.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
        mp.setattr(socket.socket, "connect", guarded_connect)
        mp.setattr(socket.socket, "connect_ex", guarded_connect_ex)


@pytest.fixture
def newcomer(tmp_path, monkeypatch):
    """No API key, no network, a FLORA_NB_HOME of its own, and an empty working directory; yields that folder."""
    for name in ("FLORA_API_KEY", "FLORA_BASE_URL", "FLORA_WORKSPACE_ID", "FLORA_NB_SIM_PERSIST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    guard = NoNetwork()
    guard.install(monkeypatch)
    yield work
    assert not guard.refused, f"the examples tried to reach the network: {guard.refused}"


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    yield shell
    close_everything(shell.user_ns)
    InteractiveShell.clear_instance()


def sessions(ns: dict[str, Any]) -> list[Any]:
    """Every Flora session the page opened: those it named, and the one the magics use."""
    from flora_nb import Flora
    from flora_nb._session import open_session

    found = [v for v in ns.values() if isinstance(v, Flora)]
    current = open_session()
    return found + ([current] if current is not None and current not in found else [])


def close_everything(ns: dict[str, Any]) -> None:
    from flora_nb.sim import FloraSimulator

    for fl in sessions(ns):
        fl.close()
    for sim in [v for v in ns.values() if isinstance(v, FloraSimulator)]:
        sim.stop()


def run_page(shell: Any, page: Path) -> dict[str, Any]:
    """Run the page's python blocks in order in ``shell``; fail naming the first block that raised."""
    examples = runnable(page)
    assert examples, f"{page_id(page)} has no python example"
    for block in examples:
        result = shell.run_cell(block.code, store_history=True)
        error = result.error_before_exec or result.error_in_exec
        assert error is None, f"{page_id(page)} line {block.line}: {type(error).__name__}: {error}\n{block.code}"
    return shell.user_ns


def check_server_records(ns: dict[str, Any]) -> int:
    """From the simulators' own records: no run was started twice. Returns how many simulators the page used."""
    from flora_nb.sim import FloraSimulator

    servers = {id(s): s for s in [fl.simulator for fl in sessions(ns)] + list(ns.values())
               if isinstance(s, FloraSimulator)}
    for sim in servers.values():
        keys = [r["idempotency_key"] for r in sim.run_records()]
        assert len(keys) == len(set(keys)), "a run was started twice"
    return len(servers)


# ------------------------------------------------------------------------------- what each page's examples did

def _png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _best_rating(ns: dict[str, Any]) -> float:
    return max(fl.runs()["rating"].max() for fl in sessions(ns) if not fl.closed)


def _runs_page(ns: dict[str, Any], work: Path) -> None:
    assert ns["wolf"].status == "completed" and any((work / "fox").iterdir())
    assert _png(work / "shots" / "bottle.png") and ns["asset"].status == "ready"


def _sweeps_page(ns: dict[str, Any], work: Path) -> None:
    assert any((work / "out").iterdir())
    assert _best_rating(ns) == 5  # the rating example landed in the ledger, and survived the "restart"


def _forms_page(ns: dict[str, Any], work: Path) -> None:
    assert ns["form"].sweep.counts.get("completed") == 3  # the click started the three variations
    assert _best_rating(ns) == 5


def _offline_page(ns: dict[str, Any], work: Path) -> None:
    import nbformat  # imported when used: nbformat's import costs ~3 s, paid by every worker

    # The page's own pytest test, run as pytest would, on a notebook like the one it names.
    code = ("import flora_nb as fnb\n"
            "with fnb.Flora() as fl:\n"
            "    sweep = fl.sweep('poster-studio', grid={'prompt': ['a heron', 'an owl', 'a hare']})\n"
            "    assert sweep.wait(120).counts.get('completed') == 3, sweep.counts")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]), work / "my-notebook.ipynb")
    (work / "own").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        ns["test_my_notebook_on_a_flaky_flora"](mp, work / "own")


PAGE_CHECKS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "guide/runs.md": _runs_page,
    "guide/sweeps.md": _sweeps_page,
    "guide/forms-and-gallery.md": _forms_page,
    "guide/offline-and-testing.md": _offline_page,
}


# ----------------------------------------------------------------------------------------------------- the tests

def test_most_examples_run():
    python = [(page, b) for page in all_pages() for b in blocks(page, "python")]
    skipped = [f"{page_id(page)}:{b.line}" for page, b in python if b.code.startswith(NOT_RUN)]
    assert len(python) >= 40
    assert len(skipped) <= MAX_NOT_RUN, f"too many python blocks marked '{NOT_RUN}': {skipped}"
    odd = [f"{page_id(p)}:{b.line} ({b.lang or 'no language'})" for p in all_pages() for b in blocks(p)
           if b.lang not in ("python", "bash", "text") and p != RELIABILITY]
    assert not odd, f"fence every block with python, bash or text: {odd}"


PAGES_WITH_EXAMPLES = [p for p in doc_pages() if runnable(p)]


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES, ids=page_id)
def test_page_examples_run_offline(page, newcomer, shell):
    ns = run_page(shell, page)
    assert check_server_records(ns) >= 1, "the page never started the built-in simulator"
    PAGE_CHECKS.get(page_id(page), lambda ns, work: None)(ns, newcomer)


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug = _anchor(heading)
        found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return found


def links(page: Path) -> list[str]:
    """Every link and picture target of a page, outside code blocks and code spans."""
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text(encoding="utf-8")))
    return re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z+.-]*:", target):  # https:, mailto: ...: not a file of the repository
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (anchor and (file.suffix != ".md" or anchor not in anchors(file))):
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", all_pages(), ids=page_id)
def test_links_resolve(page):
    assert not broken_links(page), f"{page_id(page)}: links to nothing: {broken_links(page)}"


PLACEHOLDERS = [re.compile(r"\bOWNER\b|\bTODO\b|\bXXX\b|\bFIXME\b|\bTBD\b"),  # in capitals: "owner" is a word
                re.compile(r"<owner>|<org>|<repo>|your[-_ ](org|repo|fork|user(name)?|name)\b|\bexample\.(com|org|net)\b"
                           r"|lorem ipsum|/home/you\b|\bchangeme\b", re.I)]


@pytest.mark.parametrize("page", all_pages(), ids=page_id)
def test_no_placeholders(page):
    text = page.read_text(encoding="utf-8")
    found = [(text.count("\n", 0, m.start()) + 1, m.group(0)) for rx in PLACEHOLDERS for m in rx.finditer(text)]
    assert not found, f"{page_id(page)}: placeholders (line, text): {found}"


def test_index_links_every_page():
    index = DOCS / "index.md"
    linked = {(DOCS / target.partition("#")[0]).resolve() for target in links(index)}
    missing = [page_id(p) for p in doc_pages() if p != index and p.resolve() not in linked]
    assert not missing, f"docs/index.md does not link: {missing}"
    assert {"guide", "reference"} <= {p.parent.name for p in doc_pages()}
