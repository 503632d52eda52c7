"""The budget rule: what a budget may still take, and the reserve each run holds until its charge is known.

A run is launched only if what has been charged, plus a reserve for every run whose charge is not
known yet (in flight, or finished without a final charge), plus this run's reserve, fits the budget.
The reserve is the run's estimate times the highest charged/estimated ratio the ledger has seen for
the technique. Pure: no SQL, no HTTP.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ._look import usd

__all__ = ["DEFAULT_RATIO", "PERIODS", "Exposure", "confirmation_needed", "is_money", "limit_words", "period_start",
           "reserve_ratio", "summarize"]

PERIODS = (None, "day", "month")

DEFAULT_RATIO = 1.25  # until the ledger knows how a technique's charges compare to its price
AGREEING_CHARGES = 3  # this many charges with one ratio make the price "known exactly"
_TOLERANCE = 1e-6


def is_money(value: Any) -> bool:
    """A usable price or charge: a finite number >= 0 (not a bool, not a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and value >= 0


def reserve_ratio(count: int, low: float | None, high: float | None) -> float:
    """The factor a run's estimate is multiplied by while its charge is unknown.

    1.25 until charges are known. When at least three known charges agree (a technique charging a
    fixed price), their ratio. When they vary, the highest seen, but never less than 1.25: the
    highest of a few varying charges is no bound on the next one.
    """
    if count <= 0 or high is None or low is None or not math.isfinite(high):
        return DEFAULT_RATIO
    if count >= AGREEING_CHARGES and high - low <= _TOLERANCE * max(1.0, high):
        return max(high, 0.0)
    return max(high, DEFAULT_RATIO)


@dataclass(frozen=True)
class Exposure:
    """Spending that counts against a budget right now (USD)."""

    charged: float = 0.0  # final charges known
    reserved: float = 0.0  # reserves of runs whose charge is unknown
    pending: int = 0  # runs holding a reserve
    active: int = 0  # ... of which not finished yet (their reserve may shrink soon)

    @property
    def committed(self) -> float:
        return self.charged + self.reserved

    def fits(self, reserve: float, budget: float) -> bool:
        """Does a new run holding ``reserve`` fit under ``budget``?"""
        return self.committed + reserve <= budget + 1e-9


def summarize(groups: Iterable[tuple[str, float, float, int, int]], ratio: Callable[[str], float],
              floor: Callable[[str], float] = lambda _: 0.0) -> Exposure:
    """An Exposure from the ledger's per-technique sums (see ``Ledger.exposure``); ``floor`` is what
    each run of a technique holds at least (the highest charge seen: a listed price can be too low)."""
    charged = reserved = 0.0
    pending = active = 0
    for technique_id, known, estimates, unknown, running in groups:
        charged += known
        reserved += max(estimates * ratio(technique_id), unknown * floor(technique_id)) if unknown else 0.0
        pending += unknown
        active += running
    return Exposure(charged, reserved, pending, active)


def confirmation_needed(name: str, runs: int, per_run: float | None, threshold: float | None) -> str | None:
    """Why a start of ``runs`` runs at ``per_run`` USD each (None: unknown) needs the user's yes, or None.

    ``threshold`` is the ``confirm_above`` setting (None: never ask). The worst case is the listed
    price, or the highest charge seen when that is higher; an unknown price always asks.
    """
    if threshold is None or runs <= 0:
        return None
    what = f"{runs:,} run{'s' if runs != 1 else ''} of {name}"
    if per_run is None:
        return (f"Starting {what} would spend an unknown amount (FLORA lists no price for it), and "
                f"confirm_above is {usd(threshold)}.")
    total = runs * per_run
    if total <= threshold + 1e-9:
        return None
    return (f"Starting {what} would spend up to {usd(total)} ({usd(per_run)} a run), above "
            f"confirm_above of {usd(threshold)}.")


def period_start(period: str | None, now: float) -> float | None:
    """When a spend limit's period began (UTC midnight, or the first of the month); None: no period."""
    if period is None:
        return None
    day = _dt.datetime.fromtimestamp(now, tz=_dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return (day if period == "day" else day.replace(day=1)).timestamp()


def limit_words(technique: str | None, period: str | None, usd: float) -> str:
    """'the spend limit of $5.00 a day for tech_x' in words."""
    per = {"day": " a day (UTC)", "month": " a month (UTC)"}.get(period or "", " in all")
    scope = f" for {technique}" if technique else " for every technique"
    return f"the spend limit of ${usd:,.2f}{per}{scope}"
