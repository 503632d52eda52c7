"""Client benchmark: simulator throughput and the client's per-request overhead.

Prints each figure beside a baseline measured in the same run:
- simulator throughput: GET requests/s from 8 threads (bare requests.Session each), target >= 500/s;
- client overhead: seconds per FloraClient.request() over seconds per bare, lean
  requests.Session(trust_env=False).get on the same route, same server, same run (the headline
  ratio: FloraClient skips env/netrc lookups too, so a default Session would flatter it; that ratio
  is printed second). Target ratio <= 1.3. Median of --rounds (>= 3) alternating rounds.

Usage: python benchmarks/bench_client.py [--requests N] [--rounds R]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import statistics
import time

import requests

from flora_nb import FloraClient
from flora_nb.sim import FloraSimulator

ROUTE = "/workspaces"


def throughput(sim: FloraSimulator, threads: int, per_thread: int) -> float:
    """Requests per second served to ``threads`` clients, each with its own keep-alive session."""
    url = sim.base_url + ROUTE
    headers = {"Authorization": f"Bearer {sim.api_key}"}

    def worker(_: int) -> int:
        with requests.Session() as s:
            for _ in range(per_thread):
                s.get(url, headers=headers, timeout=10).raise_for_status()
        return per_thread

    began = time.perf_counter()
    with cf.ThreadPoolExecutor(threads) as pool:
        done = sum(pool.map(worker, range(threads)))
    return done / (time.perf_counter() - began)


def bare_seconds(sim: FloraSimulator, n: int, trust_env: bool = True) -> float:
    url = sim.base_url + ROUTE
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    with requests.Session() as s:
        s.trust_env = trust_env
        began = time.perf_counter()
        for _ in range(n):
            r = s.get(url, headers=headers, timeout=10)
            r.raise_for_status()
            r.json()
        return (time.perf_counter() - began) / n


def client_seconds(sim: FloraSimulator, n: int) -> float:
    with FloraClient(api_key=sim.api_key, base_url=sim.base_url) as client:
        began = time.perf_counter()
        for _ in range(n):
            client.request("GET", ROUTE)
        return (time.perf_counter() - began) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (median reported)")
    args = parser.parse_args()
    args.rounds = max(3, args.rounds)
    with FloraSimulator(seed=0) as sim:
        client_seconds(sim, 50), bare_seconds(sim, 50)  # warm up both paths
        rps = throughput(sim, threads=8, per_thread=args.requests // 4)
        print(f"simulator throughput, 8 threads: {rps:8.0f} requests/s   (target >= 500)")
        bare, lean, ours = [], [], []
        for _ in range(args.rounds):  # alternate so all see the same machine noise
            bare.append(bare_seconds(sim, args.requests))
            lean.append(bare_seconds(sim, args.requests, trust_env=False))
            ours.append(client_seconds(sim, args.requests))
        b, b2, c = statistics.median(bare), statistics.median(lean), statistics.median(ours)
        print(f"bare Session(trust_env=False).get    : {b2 * 1e6:8.0f} us/request (baseline: no env/netrc lookups,")
        print("                                        as FloraClient does)")
        print(f"bare requests.Session().get          : {b * 1e6:8.0f} us/request (default session, for reference)")
        print(f"FloraClient.request                  : {c * 1e6:8.0f} us/request   (medians of {args.rounds} rounds)")
        print(f"client overhead ratio vs lean bare   : {c / b2:8.2f}   (target <= 1.3)")
        print(f"client overhead ratio vs default bare: {c / b:8.2f}   (flattering: the default session does more)")


if __name__ == "__main__":
    main()
