"""A damaged ledger file says it is damaged, where it is and what to do, and nothing starts.

Before, a damaged page surfaced as "database disk image is malformed" with advice about writable
folders and full disks, at whatever moment it was first read: possibly after runs were started.
"""

from __future__ import annotations

import random
import re
import sqlite3
from pathlib import Path

import pytest

from flora_nb import Flora
from flora_nb._errors import LedgerError
from flora_nb._ledger import Ledger

ADVICE = re.compile(r"move the file aside.*restore a copy.*\.recover", re.S)


def _open(sim, path: Path) -> Flora:
    return Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=path, poll_interval=(0.02, 0.05))


def _a_used_ledger(sim, path: Path) -> None:
    """A real ledger: a finished sweep of 60 runs, so the file has pages of runs, events and indexes."""
    with _open(sim, path) as fl:
        fl.sweep("tech_a1poster", grid={"prompt": [f"p{n:02d} " + "x" * 300 for n in range(60)]},
                 max_concurrency=20).wait(120)


def _damage_the_middle(path: Path) -> None:
    """Overwrite the middle third of the file's pages with noise (the header, page 1, stays whole)."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    pages = len(data) // page
    noise = random.Random(0)
    for n in range(pages // 3, 2 * pages // 3):
        data[n * page:(n + 1) * page] = noise.randbytes(page)
    path.write_bytes(bytes(data))


def _refused(sim, path: Path) -> str:
    before = sim.stats()["requests_total"]
    runs = len(sim.run_records())
    with pytest.raises(LedgerError) as info:
        _open(sim, path)
    assert sim.stats()["requests_total"] == before and len(sim.run_records()) == runs  # nothing sent
    message = str(info.value)
    assert str(path) in message and ADVICE.search(message), message
    assert "writable" not in message and "disk is not full" not in message
    return message


def test_a_ledger_with_damaged_pages_is_refused_before_anything_starts(sim, tmp_path):
    path = tmp_path / "ledger.sqlite"
    _a_used_ledger(sim, path)
    _damage_the_middle(path)
    damaged = path.read_bytes()
    message = _refused(sim, path)
    assert "is damaged" in message and "nothing was started or sent" in message
    assert path.read_bytes() == damaged  # nothing written to it either
    with pytest.raises(LedgerError, match="is damaged"):  # the ledger alone says the same
        Ledger(path)


def test_a_file_of_garbage_is_refused_as_no_ledger_with_the_same_advice(sim, tmp_path):
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(random.Random(1).randbytes(64 * 1024))
    message = _refused(sim, path)
    assert "is not a flora_nb ledger" in message and "damaged" in message


def test_the_advice_works_recover_then_open_the_rescued_file(sim, tmp_path):
    import shutil
    import subprocess

    path = tmp_path / "ledger.sqlite"
    _a_used_ledger(sim, path)
    _damage_the_middle(path)
    message = _refused(sim, path)
    command = re.search(r"  (sqlite3 .*\| sqlite3 \S+)  ", message)
    assert command is not None, message
    if shutil.which("sqlite3") is None:
        pytest.skip("no sqlite3 command on this machine")
    subprocess.run(command.group(1), shell=True, check=True, capture_output=True)
    rescued = tmp_path / "ledger-recovered.sqlite"
    assert sqlite3.connect(rescued).execute("PRAGMA quick_check").fetchone() == ("ok",)
    with _open(sim, rescued) as fl:  # a session works on what was rescued
        assert fl.ledger.path == rescued and len(fl.ledger.rows()) <= 60
