"""Command line: ``python -m flora_nb sim ...`` (the simulator), ``demo`` and ``ledger copy SRC DST``."""

from __future__ import annotations

import sys

USAGE = """usage: python -m flora_nb COMMAND [options]

commands:
  sim    serve the built-in FLORA simulator on loopback (see: python -m flora_nb sim -h)
  demo   a small sweep on the simulator: its comparison, costs, files and a chart
         (then: make lab, for the three tutorial notebooks in JupyterLab)
  ledger copy SRC DST
         add a ledger's runs to another (a personal SQLite file into a team's PostgreSQL, or back)
"""


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "sim":
        from .sim._cli import main as sim_main

        return sim_main(rest)
    if command == "demo":
        from ._demo import main as demo_main

        return demo_main(rest)
    if command == "ledger":
        from ._ledger_copy import main as ledger_main

        return ledger_main(rest)
    print(f"unknown command {command!r}\n\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
