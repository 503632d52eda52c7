"""``python -m flora_nb ledger copy SRC DST``: move a personal ledger into a team's (and back).

Every run, its events, sweeps, cached uploads and spend limits of SRC are added to DST in one
transaction; what DST has already (the same idempotency key, the same run) is left alone, so
copying twice adds nothing. SRC and DST are paths, ``sqlite:///PATH`` or ``postgresql://...``.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from ._errors import FloraError, LedgerError
from ._ledger import COPIED_TABLES, Ledger
from ._look import say
from ._sql import is_database_url, sqlite_path

__all__ = ["copy_ledger", "main"]


def copy_ledger(source: str, target: str) -> dict[str, int]:
    """Add ``source``'s rows to ``target``; how many rows of each table were added."""
    if not is_database_url(source) and not sqlite_path(source).is_file():
        raise LedgerError(f"no ledger at {source}: give an existing ledger file, sqlite:///PATH or postgresql://... "
                          "as SRC (nothing was copied).")
    src = Ledger(source)
    try:
        tables = {name: src.dump(name) for name in COPIED_TABLES}
    finally:
        src.close()
    dst = Ledger(target)
    try:
        return dst.load(tables)
    finally:
        dst.close()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m flora_nb ledger", description="Move runs between ledgers.")
    commands = parser.add_subparsers(dest="command", required=True)
    copy = commands.add_parser("copy", help="add every run of SRC to DST (copying twice adds nothing)",
                               description="Add every run, event, sweep, upload and spend limit of SRC to DST; "
                                           "what DST has already is left alone. Example: python -m flora_nb ledger "
                                           "copy ~/.flora_nb/ledger.sqlite postgresql://ana@db.studio.internal/flora")
    copy.add_argument("source", metavar="SRC", help="a ledger file, sqlite:///PATH or postgresql://USER@HOST/DB")
    copy.add_argument("target", metavar="DST", help="the ledger to add them to (made if missing)")
    args = parser.parse_args(list(argv))
    try:
        added = copy_ledger(args.source, args.target)
    except (FloraError, OSError) as exc:
        say(f"ledger copy: {exc}", error=True)
        return 1
    say(f"added {added['runs']} run(s), {added['events']} event(s), {added['sweeps']} sweep(s), "
          f"{added['uploads']} upload(s), {added['spend_limits']} spend limit(s); what was there already was kept.")
    return 0
