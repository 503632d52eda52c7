"""Plots of spend and sweeps with matplotlib (the ``plot`` extra), labelled in USD."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from ._errors import ConfigError
from ._look import usd

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["plot_spend", "plot_sweep"]

INSTALL = "pip install 'flora_nb[plot]'"


def _pyplot(what: str) -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(f"{what} draws with matplotlib, which is not installed: {INSTALL}") from None
    return plt


def plot_spend(spend: pd.Series, ax: Any = None) -> Any:
    """Cumulative charged USD as a step line: spend rises at each completion and stays flat between."""
    plt = _pyplot("fl.plot_spend()")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")  # room for the time axis and its date
    import matplotlib.dates as mdates

    times = spend.index.tz_convert(None) if getattr(spend.index, "tz", None) is not None else spend.index
    ax.plot(times, spend.to_numpy(), drawstyle="steps-post", marker=".", label="charged")
    locator = mdates.AutoDateLocator(minticks=3, maxticks=7)  # ticks people read: 14:05, 14:10 ... not 46.45000
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, show_offset=True))
    ax.set_ylabel("cumulative spend (USD)")
    ax.set_xlabel("completed at (UTC)")
    ax.yaxis.set_major_formatter("${x:,.2f}")
    ax.set_title(f"Spend: {usd(float(spend.iloc[-1]) if len(spend) else 0.0)}")
    ax.grid(True, alpha=0.3)
    return ax


def _labels(frame: pd.DataFrame, varied: Sequence[str]) -> list[str]:
    columns = [f"input.{k}" for k in varied if f"input.{k}" in frame]
    if not columns:
        return [f"v{v}" for v in frame.index]
    return [", ".join(str(row[c])[:24] for c in columns) for _, row in frame.iterrows()]


def plot_sweep(frame: pd.DataFrame, varied: Sequence[str]) -> Any:
    """Charged cost (USD) and run duration (s) per variation, as steps over the variations."""
    plt = _pyplot("sweep.plot()")
    agg = {"charged_cost": "sum", "run_seconds": "mean"} | {f"input.{k}": "first" for k in varied if f"input.{k}" in frame}
    per = frame.groupby("variation").agg(agg)
    labels, x = _labels(per, varied), list(range(len(per)))
    fig, axes = plt.subplots(2, 1, sharex=True, figsize=(max(5, 0.9 * len(per) + 2), 5))
    for ax, column, unit in ((axes[0], "charged_cost", "charged (USD)"), (axes[1], "run_seconds", "run time (s)")):
        ax.step(x, per[column].to_numpy(dtype=float), where="mid", marker="o")
        ax.set_ylabel(unit)
        ax.grid(True, alpha=0.3)
    axes[0].yaxis.set_major_formatter("${x:,.3f}")
    axes[1].set_xticks(x, labels, rotation=30, ha="right")
    axes[1].set_xlabel(" x ".join(varied) or "variation")
    fig.tight_layout()
    return axes
