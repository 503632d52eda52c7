"""The README's main job, on the built-in simulator: list techniques, run one, print the result."""

from __future__ import annotations

import argparse
import time

from ._client import FloraClient
from ._models import RunState


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m flora_nb demo", description=__doc__)
    parser.add_argument("--speed", type=float, default=20.0, help="simulator speed-up (default 20)")
    parser.add_argument("--prompt", default="a lighthouse at dusk, risograph print")
    return parser.parse_args(argv)


def _poll(client: FloraClient, run_id: str, poll_url: str | None, every: float) -> RunState:
    while True:
        state = client.get_run(run_id, poll_url)
        print(f"  {state.status:<9} {state.progress:5.1f}%")
        if state.terminal:
            return state
        time.sleep(every)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    from .sim import FloraSimulator

    args = _parse(argv)
    with FloraSimulator(speed=args.speed, seed=0) as sim:
        client = FloraClient(api_key=sim.api_key, base_url=sim.base_url)
        print(f"FLORA simulator at {sim.base_url} (speed x{args.speed:g})\n")
        print("Techniques:")
        techniques = list(client.techniques())
        for t in techniques:
            print(f"  {t.technique_id:<22} {t.name:<32} ${t.run_cost:.2f}/run")
        tech = next(t for t in techniques if [i.type for i in t.required_inputs] == ["text"])
        workspace = client.workspaces()[0].workspace_id
        prompt_id = tech.required_inputs[0].id
        print(f"\nStarting {tech.name!r} in {workspace} with {prompt_id}={args.prompt!r}")
        start = client.start_technique_run(tech.technique_id, workspace, {prompt_id: args.prompt})
        print(f"  run {start.run_id}: quoted ${start.charged_cost:.2f}, about {start.estimated_seconds:.1f} s")
        every = max(0.05, min(2.0, (start.estimated_seconds or 2.0) / 5))
        state = _poll(client, start.run_id, start.poll_url, every)
        _report(client, state)
        return 0 if state.status == "completed" else 1


def _report(client: FloraClient, state: RunState) -> None:
    cost = "unknown" if state.charged_cost is None else f"${state.charged_cost:.4f}"
    print(f"\nRun {state.run_id} {state.status}; charged {cost}")
    if state.error_code:
        print(f"  error {state.error_code}: {state.error_message}")
    for out in state.outputs:
        if out.text is not None:
            print(f"  {out.output_id} (text): {out.text[:120]}")
        else:
            size = len(client.fetch_media(out.url))
            print(f"  {out.output_id} ({out.type}): {out.url} [{size} bytes]")
