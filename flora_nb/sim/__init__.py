"""A local FLORA API simulator: real HTTP on loopback, FLORA's shapes, switchable faults.

    from flora_nb.sim import FloraSimulator, Faults
    with FloraSimulator(speed=20.0, faults=Faults(error_rate=0.1)) as sim:
        sim.base_url, sim.api_key, sim.stats()

Media outputs are served without auth at ``{origin}/media/{run_id}/{output_id}.{ext}``.
"""

from __future__ import annotations

from ._faults import Faults
from ._simulator import FloraSimulator

__all__ = ["Faults", "FloraSimulator"]
