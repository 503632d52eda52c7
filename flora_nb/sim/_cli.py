"""``python -m flora_nb sim``: serve the simulator in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import shlex
import threading

from ._faults import Faults
from ._simulator import DEFAULT_API_KEY, FloraSimulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flora_nb sim", description="Serve a local FLORA API simulator."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0 = any free port)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="accepted API key")
    parser.add_argument("--speed", type=float, default=1.0, help="divide every duration by this")
    parser.add_argument("--seed", type=int, default=0, help="seed for injected faults")
    faults = parser.add_argument_group("faults (default: none)")
    faults.add_argument("--error-rate", type=float, default=0.0, help="share of requests -> 500")
    faults.add_argument("--drop-rate", type=float, default=0.0, help="share of starts dropped")
    faults.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    faults.add_argument("--rate-limit", type=float, default=None, help="requests/s per workspace")
    faults.add_argument("--run-failure-rate", type=float, default=0.0, help="share of runs failing")
    faults.add_argument("--credits", type=float, default=None, help="USD balance")
    faults.add_argument("--max-concurrent-runs", type=int, default=None, help="per workspace")
    return parser


def _faults(args: argparse.Namespace) -> Faults:
    return Faults(
        error_rate=args.error_rate,
        drop_rate=args.drop_rate,
        latency=args.latency,
        rate_limit=args.rate_limit,
        run_failure_rate=args.run_failure_rate,
        credits=args.credits,
        max_concurrent_runs=args.max_concurrent_runs,
    )


def main(argv: list[str] | None = None) -> int:
    """Serve until Ctrl-C; prints export-ready FLORA_* lines first."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        faults = _faults(args)
        sim = FloraSimulator(
            api_keys=(args.api_key,),
            speed=args.speed,
            faults=faults,
            seed=args.seed,
            host=args.host,
            port=args.port,
        )
        sim.start()
    except (ValueError, OSError) as err:
        parser.exit(2, f"flora_nb sim: {err}\n")
    print(f"FLORA simulator on {sim.base_url} (speed {args.speed:g}). Ctrl-C to stop.", flush=True)
    # Ready to paste into a shell (or `eval` from a script) as they are.
    print(f"export FLORA_BASE_URL={shlex.quote(sim.base_url)}")
    print(f"export FLORA_API_KEY={shlex.quote(sim.api_key)}")
    print(f"export FLORA_WORKSPACE_ID={shlex.quote(sim.workspace_id)}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("simulator stopped", flush=True)
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
