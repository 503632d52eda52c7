"""Sweep: many variations of one technique, priced first, capped, launched in the background, kept in the ledger."""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ._budget import Exposure, is_money, limit_words
from ._errors import (
    APIError,
    BudgetExceededError,
    FloraError,
    FloraTimeout,
    InputError,
    InsufficientCreditsError,
    RateLimitError,
)
from ._hints import HINTS, RETRY_LATER, RETRYABLE, hint_for, normal_code
from ._look import card_html, charged_so_far, duration, say, usd
from ._models import Technique
from ._paths import output_path
from ._plan import Plan
from ._run import Run
from ._states import ACTIVE, COMPLETED, FAILED, LOST, QUEUED, SKIPPED, STARTING, TERMINAL, UNCONFIRMED, UNSTARTED

if TYPE_CHECKING:
    import pandas as pd

    from ._engine import RunEngine

__all__ = ["Sweep", "check_price"]

log = logging.getLogger("flora_nb.sweep")

# FLORA remembers an idempotency key for 7200 s: an unconfirmed start is resent (same key) only well
# within that, so a run it did create answers 409 instead of being made twice.
RESEND_WITHIN = 6600.0
SYNC_SECONDS = 0.5  # how often wait() reads the ledger for changes made by other kernels
UNCONFIRMED_MESSAGE = ("The start's answer was lost and no matching run was found on FLORA; "
                       "sweep.resume() sends it again with its own key (never twice).")
_KEEP = object()  # resume(): keep the sweep's budget


def check_price(tech: Technique, budget: float | None, session_budget: float | None) -> None:
    """A budget (the sweep's or the session's) needs a known price: InputError saying what to do."""
    if tech.run_cost is None and (budget is not None or session_budget is not None):
        which = "budget=" if budget is not None else "the session budget"
        raise InputError(f"{tech.name or tech.technique_id} has no known price (its run_cost is missing or not a "
                         f"finite number >= 0), so {which} cannot be enforced; drop the budget (and the session "
                         "budget) to run it anyway, or ask FLORA for its price.")


class Sweep:
    """A sweep: counts, spend, ETA, ``wait()``, ``stop()``, ``resume()``, ``retry_failed()`` and comparisons.

    Its plan lives in the ledger, so ``fl.get_sweep(sweep_id)`` rebuilds it in any later kernel.
    FLORA has no way to cancel a run: ``stop()`` stops launching; runs already started keep being
    tracked (and charged) until they end.
    """

    def __init__(self, engine: RunEngine, tech: Technique, plan: Plan, runs: list[Run], sweep_id: str,
                 max_concurrency: int, budget: float | None, workspace: str | None = None):
        self._engine = engine
        self.technique = tech
        self.plan = plan
        self.runs = runs
        self.sweep_id = sweep_id
        self.max_concurrency = max_concurrency
        self.budget = budget
        self.workspace_id = workspace or (runs[0].workspace_id if runs else engine.catalog.workspace_id)
        self.varied = list(plan.varied)
        self.stop_reason: str | None = None
        self.reusable = 0  # variations a ledger run could have served (see reuse=True)
        self.launch_error: str | None = None
        self._stop = threading.Event()
        self._slot = threading.Condition()
        self._deciding = threading.RLock()  # a run is begun, or stop() is seen, never both at once
        self._thread: threading.Thread | None = None
        self._resend: dict[int, float] = {}  # unconfirmed starts to send again (same key) -> first send time
        self._awaiting: set[int] = set()  # lost starts being looked for when resume() was called
        self._watched: set[int] = set()
        self._synced = 0.0
        self._flying: set[int] = set()  # local ids in flight, kept up to date by change callbacks (no scans)
        self._cursor = 0  # runs before it are not queued for this session (reset when more are queued)
        self._halt: tuple[str, str] | None = None  # a send that says launching must end: (code, message)
        self._posting: set[int] = set()  # local ids whose POST is out in the send pool (they hold a slot)
        self._watch(runs)

    def _watch(self, runs: Sequence[Run]) -> None:
        for run in runs:
            if run.local_id not in self._watched:
                self._watched.add(run.local_id)
                run.on_change(self._notify, inline=True)
            self._count(run)

    def start(self) -> Sweep:
        """Launch the queued runs in the background (at most ``max_concurrency`` in flight)."""
        with self._slot:
            if self._thread is None:
                self._cursor, self._halt = 0, None
                self._thread = threading.Thread(target=self._launch_all, name=f"flora_nb-sweep-{self.sweep_id}",
                                                daemon=True)
                self._thread.start()
        return self

    @property
    def launching(self) -> bool:
        """Is this session still launching runs of the sweep?"""
        thread = self._thread
        return thread is not None and thread.is_alive()

    # ---------------------------------------------------------------- launching

    def _notify(self, run: Run | None = None) -> None:
        with self._slot:
            if run is not None:
                self._count(run)
            self._slot.notify_all()

    def _count(self, run: Run) -> None:
        if (run.status in ACTIVE and not run.unconfirmed) or run.local_id in self._posting:
            self._flying.add(run.local_id)
        else:
            self._flying.discard(run.local_id)

    def _in_flight(self) -> int:
        return len(self._flying)

    def _stopping(self) -> bool:
        """Stopped here, or by any session of the ledger (``%flora stop`` in another kernel)."""
        if self._engine.closed:
            self._stop.set()
        if not self._stop.is_set() and self._engine.ledger.stop_requested(self.sweep_id):
            self._stop.set()
        return self._stop.is_set()

    def _running(self) -> bool:
        return not self._stopping()

    def _wait_for_slot(self, counted: int = 0) -> bool:
        """Wait until fewer than ``max_concurrency`` runs are in flight (``counted`` of them being this one)."""
        with self._slot:
            while self._in_flight() - counted >= self.max_concurrency:
                if self._stop.is_set():
                    return False
                self._slot.wait(0.1)
        return not self._stopping()

    def _next(self) -> Run | None:
        """The next run to launch, or None (then this launcher ends, under the lock ``start()`` takes)."""
        with self._slot:
            owner, runs = self._engine.owner, self.runs
            while self._cursor < len(runs) and not (runs[self._cursor].status == QUEUED
                                                    and runs[self._cursor].owner == owner):
                self._cursor += 1
            run = runs[self._cursor] if self._cursor < len(runs) else None
            if run is None and not self._resend and not self._awaiting:
                self._drain()
                self._thread = None
            return run

    def _launch_all(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.max_concurrency),
                                        thread_name_prefix=f"flora_nb-start-{self.sweep_id}")
        try:
            while True:
                run = self._next()
                if run is not None:
                    if not self._launch_one(run):
                        return
                elif self._resend or self._awaiting:
                    self._send_again()
                else:
                    return
        except Exception as exc:  # never leave runs queued forever without saying why
            if self._engine.closed:
                return  # the session closed under us: its queued runs wait for a resume()
            self.launch_error = f"{type(exc).__name__}: {exc}"
            log.warning("flora_nb sweep %s stopped launching: %s", self.sweep_id, self.launch_error,
                        exc_info=not isinstance(exc, FloraError))
            self._skip_rest("launch_error", self.launch_error)
        finally:
            self._pool.shutdown(wait=True)  # every POST of the sweep answered (or lost) before it says done
            with self._slot:
                if self._thread is threading.current_thread():
                    self._thread = None
                self._slot.notify_all()

    def _launch_one(self, run: Run, since: float | None = None) -> bool:
        """Launch one run when a slot and the budget allow (its POST goes out in the send pool, so
        starts run in parallel); False when launching must end."""
        while True:
            if not self._wait_for_slot(counted=1 if since is not None else 0):
                return self._skip_rest("stopped", "The sweep was stopped before this run started.")
            if self._halt is not None:  # a send that just ended said launching must end
                return self._skip_rest(*self._halt)
            fits = self._wait_for_budget(run)
            if fits is None:
                continue  # stopped while waiting: the next turn says so
            if not fits:
                return self._skip_rest("budget", self._budget_message(run))
            begun = self._begin(run, since)
            if begun is None:
                return self._skip_rest("stopped", "The sweep was stopped before this run started.")
            if not begun:
                continue  # a start elsewhere in the session took the room first: look again
            with self._slot:
                self._posting.add(run.local_id)
                self._count(run)
            self._pool.submit(self._send, run, since is not None)
            return True

    def _begin(self, run: Run, since: float | None) -> bool | None:
        """Mark ``run`` starting (True), or None when the sweep was stopped, or False when the budget's
        room was taken meanwhile. stop() waits for this, so what it says was never started never is."""
        with self._deciding:
            if self._stop.is_set():
                return None
            try:
                self._engine.begin_start(run, self.technique, since)
            except BudgetExceededError:
                return False
            return True

    def _send(self, run: Run, resent: bool) -> None:
        """One POST, in the send pool: what it ends with decides whether launching goes on."""
        try:
            self._engine.send_start(run, self.technique, keep_trying=self._running, resent=resent)
        except InsufficientCreditsError as exc:
            self._halt = ("insufficient_credits", exc.message)
        except RateLimitError:  # only when stopped while FLORA said 429: the run is skipped
            self._halt = ("stopped", "The sweep was stopped before this run started.")
        except APIError as exc:  # recorded as failed by the session; the next variation may be fine
            log.info("flora_nb sweep %s: variation %s rejected: %s", self.sweep_id, run.variation, exc)
        except Exception as exc:  # never leave runs queued forever without saying why
            if not self._engine.closed:
                self.launch_error = f"{type(exc).__name__}: {exc}"
                log.warning("flora_nb sweep %s: a start failed: %s", self.sweep_id, self.launch_error,
                            exc_info=not isinstance(exc, FloraError))
                self._halt = ("launch_error", self.launch_error)
        finally:  # the slot is freed only now, after _halt is set: no start slips in after a last one
            with self._slot:
                self._posting.discard(run.local_id)
                self._count(run)
                self._slot.notify_all()

    def _drain(self) -> None:
        """(Under the slot lock) wait for POSTs still out; a send that ended launching skips the rest."""
        while self._posting:
            self._slot.wait(0.1)
        if self._halt is not None:
            self._skip_rest(*self._halt)

    # ---------------------------------------------------------------- budget

    def _budgets(self, run: Run) -> list[tuple[str, float, Exposure]]:
        session_budget, found = self._engine.budget, []
        if self.budget is not None:
            found.append(("sweep", self.budget, self._engine.exposure(sweep_id=self.sweep_id, exclude=run.local_id)))
        if session_budget is not None:
            found.append(("session", session_budget, self._engine.exposure(owner=self._engine.owner, exclude=run.local_id)))
        for technique, period, limit, spent in self._engine.spend_limits(run.technique_id, exclude=run.local_id):
            found.append((limit_words(technique, period, limit), limit, spent))  # kept in the ledger: every session's spend
        return found

    def _wait_for_budget(self, run: Run) -> bool | None:
        """True when the run fits every budget; False when it never will; None if stopped meanwhile.

        A run that does not fit waits while runs still in flight hold reserves (their final charges
        may be lower); once nothing is in flight, what is charged only grows, so it never will.
        """
        while True:
            budgets = self._budgets(run)
            if not budgets:
                return True
            reserve = self._engine.reserve(run.technique_id, run.estimated_cost)
            tight = [(b, e) for _, b, e in budgets if not e.fits(reserve, b)]
            if not tight:
                return True
            if not any(e.active for _, e in tight):
                return False
            with self._slot:
                self._slot.wait(0.1)
            if self._stopping():
                return None

    def _budget_message(self, run: Run) -> str:
        reserve = self._engine.reserve(run.technique_id, run.estimated_cost)
        for scope, budget, spent in self._budgets(run):
            if not spent.fits(reserve, budget):
                unknown = (f" and ${spent.reserved:.2f} held for {spent.pending} finished run(s) whose charge is "
                           "not known yet (resume() looks again)") if spent.reserved else ""
                what = scope if scope.startswith("the spend limit") else f"the {scope} budget of ${budget:.2f}"
                return (f"Not started: {what} has ${spent.charged:.2f} charged{unknown}; "
                        f"this run would hold ${reserve:.2f} until charged.")
        return "Not started: the budget ran out."

    # ---------------------------------------------------------------- resending unconfirmed starts

    def _send_again(self) -> None:
        """After launching: starts whose answer was lost are resent (same key) once FLORA shows no run."""
        while self._awaiting and not self._stopping():
            lost = [r for r in self.runs if r.local_id in self._awaiting]
            settled = [r for r in lost if r.id is not None or r.error_code != LOST]
            for run in settled:
                self._awaiting.discard(run.local_id)
                if run.id is None and run.unconfirmed:
                    self._claim_resend([run])
            if self._awaiting:
                with self._slot:
                    self._slot.wait(0.1)
        for run in [r for r in self.runs if r.local_id in self._resend]:
            since = self._resend.pop(run.local_id, None)
            if since is None or self._stopping() or not self._launch_one(run, since=since):
                self._unclaim_resend(run)
        self._awaiting.clear()

    def _age(self, run: Run) -> float:
        """Seconds since the start was first planned or sent, by the wall clock and by the session's
        monotonic clock (whichever says older: a wall clock set back must never make a key look fresh)."""
        wall = time.time() - run.intent_at
        sent = self._engine.clock.now() - run.window_low if run.window_low is not None else 0.0
        return max(wall, sent)

    def _unclaim_resend(self, run: Run) -> None:
        """A start taken back for resending but not sent: unconfirmed again, for a later resume()."""
        if run.status == STARTING and run.id is None and run.error_code is None:
            self._engine.update(run, error_code=UNCONFIRMED, error_message=UNCONFIRMED_MESSAGE)

    def _claim_resend(self, runs: Sequence[Run]) -> None:
        """Take unconfirmed starts back for sending again, if the server would still recognise their key."""
        for run in runs:
            if self._age(run) > RESEND_WITHIN:
                log.info("flora_nb sweep %s: run %s is unconfirmed and too old to resend safely", self.sweep_id,
                         run.local_id)
                continue
            since = self._engine.start_window_low(run)
            expected = {"status": STARTING, "error_code": UNCONFIRMED, "run_id": None}
            changes = {"owner": self._engine.owner, "error_code": None, "error_message": None}
            if self._engine.claim([(run, expected, changes)], note="resend"):
                self._resend[run.local_id] = since

    # ---------------------------------------------------------------- control

    def _skip_rest(self, code: str, message: str) -> bool:
        """Mark this session's queued runs ``skipped`` with ``code``; returns False (launching ends)."""
        if self._engine.closed:
            return False  # a closed session writes nothing; its queued runs show as interrupted later
        self.stop_reason = self.stop_reason or code
        owner = self._engine.owner
        todo = [r for r in self.runs if r.status == QUEUED and r.owner == owner]
        self._engine.update_many(todo, status=SKIPPED, error_code=code, error_message=message, charged_cost=0.0)
        for run in [r for r in self.runs if r.local_id in self._resend]:
            self._unclaim_resend(run)
        self._resend.clear()
        self._awaiting.clear()
        return False

    def stop(self, quiet: bool = False) -> Sweep:
        """Stop launching (here and in any session of the ledger); started runs keep being tracked.

        Says in one line what was not started (and the money not spent) and what still runs on FLORA
        and will be charged, since FLORA cannot cancel a run (``quiet``: say nothing; ``stop_summary()``).
        """
        with self._deciding:  # a run being marked starting now is counted as sent, the others never are
            self._stop.set()
        self._engine.ledger.update_sweep(self.sweep_id, stop_requested=1)
        if not self.launching:  # queued runs of a dead session, or ours with no launcher: say so now
            self._claim_unstarted(statuses=(QUEUED,))
            self._skip_rest("stopped", "The sweep was stopped before this run started.")
        self._notify()
        if not quiet:
            say(self.stop_summary())
        return self

    def stop_summary(self) -> str:
        """What stopping leaves: variations never started (money not spent), runs still going on FLORA."""
        unstarted = [r for r in self.runs if r.status in UNSTARTED]
        going = [r for r in self.runs if r.status in ACTIVE and r.status != QUEUED]
        saved = sum(r.estimated_cost or 0.0 for r in unstarted)
        head = f"Stopped launching sweep {self.sweep_id}: {len(unstarted)} variation(s) never started ({usd(saved)} not spent)"
        if not going:
            return f"{head}; nothing is still running."
        owed = sum(r.estimated_cost or 0.0 for r in going)
        return (f"{head}; {len(going)} already sent to FLORA keep running and will be charged (about {usd(owed)}): "
                "FLORA cannot cancel a run.")

    def resume(self, budget: float | object | None = _KEEP) -> Sweep:
        """Launch the variations never started (skipped, or queued by a session that died), within
        what is left of the budget, and look again for late charges. It spends money: only on request.

        ``budget=`` replaces the sweep's budget (None: no budget). Unconfirmed starts are sent again
        with their own idempotency key, so FLORA never runs them twice.
        """
        self._prepare(budget)
        self._claim_unstarted(statuses=(QUEUED, SKIPPED))
        self._awaiting |= {r.local_id for r in self.runs if r.id is None and r.error_code == LOST}
        self._claim_resend([r for r in self.runs if r.id is None and r.unconfirmed])
        self._track_unknown_charges()
        return self.start()

    def retry_failed(self, codes: str | Sequence[str] | None = None) -> Sweep:
        """Start again the failed variations FLORA's hint says can succeed (retry now, retry later):
        new runs with new keys, the failed ones staying in the ledger. It spends money: only on request.

        ``codes=[...]`` retries the failures with these error codes (any case) instead, whatever their
        hint. Says in one line how many it retried and how many it left, by hint (see ``failures()``).
        """
        wanted = _wanted_codes(codes)
        self._prepare(_KEEP)
        retried = self._engine.ledger.retried(self.sweep_id)
        failed = [r for r in self.runs if r.status == FAILED and r.local_id not in retried]
        chosen = [r for r in failed if _chosen(r, wanted)]
        planned = [{"inputs": r.inputs, "labels": r.labels, "sweep_id": self.sweep_id, "variation": r.variation,
                    "retry_of": r.local_id} for r in chosen]
        new = self._engine.queue(self.technique, self.workspace_id, planned)
        by_old = {p["retry_of"]: run for p, run in zip(planned, new)}
        with self._slot:
            self.runs = [by_old.get(r.local_id, r) for r in self.runs]
        self._watch(new)
        self.start()
        taken = {r.local_id for r in chosen}
        say(_retry_line(chosen, [r for r in failed if r.local_id not in taken], wanted))
        return self

    def failures(self) -> pd.DataFrame:
        """The failed runs of the sweep's latest attempts, grouped by FLORA's retry hint (``hint``).

        One row per failed run: ``variation``, ``repeat``, the varied inputs, ``run_id``, ``error_code``,
        ``error_message`` and ``hint`` (ordered: retry now, retry later, change input, not retryable,
        unknown); ``failures()["hint"].value_counts(sort=False)`` counts them in that order.
        """
        frame = self.to_dataframe()
        failed = frame[frame["status"] == FAILED]
        inputs = [c for c in failed.columns if c in {f"input.{k}" for k in self.varied}]
        rows = failed[["variation", "repeat", *inputs, "run_id", "error_code", "error_message"]].copy()
        rows["hint"] = [hint_for(code, message) for code, message in zip(rows["error_code"], rows["error_message"])]
        rows["hint"] = rows["hint"].astype("category").cat.set_categories(list(HINTS), ordered=True)
        return rows.sort_values(["hint", "variation", "repeat"], kind="stable").reset_index(drop=True)

    def _prepare(self, budget: float | object | None) -> None:
        """Before launching more: the current price, the budget, and no stop request in force."""
        engine = self._engine
        if budget is not _KEEP:
            if budget is not None and not is_money(budget):
                raise InputError(f"budget must be a number of USD >= 0, got {budget!r}; or None for no budget.")
            self.budget = None if budget is None else float(budget)  # type: ignore[arg-type]
            engine.ledger.update_sweep(self.sweep_id, budget=self.budget)
        self.technique = engine.catalog.technique(self.technique.technique_id)
        check_price(self.technique, self.budget, engine.budget)
        self._sync(force=True)
        engine.ledger.update_sweep(self.sweep_id, stop_requested=0)
        self._stop.clear()
        self.stop_reason = None

    def _claim_unstarted(self, statuses: Sequence[str]) -> list[Run]:
        """Take never-started runs (skipped, or queued by a session that died) for this session."""
        owner, items = self._engine.owner, []
        for run in self.runs:
            mine = run.owner == owner and not self.launching
            never_started = run.status == SKIPPED or (run.status == QUEUED and (mine or self._engine.ledger.owner_alive(run.owner) is False))
            if never_started and run.status in statuses:
                expected = {"status": run.status, "owner": run.owner, "run_id": None}
                changes = {"status": QUEUED, "owner": owner, "user_name": self._engine.user, "host": self._engine.host,
                           "error_code": None,
                           "error_message": None, "charged_cost": None}
                items.append((run, expected, changes))
        return self._engine.claim(items, note="resume")

    def _track_unknown_charges(self) -> None:
        for run in self.runs:
            if run.id is not None and run.done and run.charged_cost is None and not run.reused_from:
                self._engine.track(run)

    def _sync(self, force: bool = False) -> None:
        """Take newer rows from the ledger (another kernel may be running or resuming this sweep)."""
        now = time.monotonic()
        if not force and now - self._synced < SYNC_SECONDS:
            return
        self._synced = now
        self._engine.sync(sweep_id=self.sweep_id)

    def wait(self, timeout: float | None = None) -> Sweep:
        """Block until every run is done or skipped; FloraTimeout at the deadline."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self.done:
                if deadline is not None and time.monotonic() >= deadline:
                    raise FloraTimeout(f"sweep {self.sweep_id} is not done after {timeout} s: {self.counts}; "
                                       "it keeps running, call wait() again.")
                with self._slot:
                    self._slot.wait(0.1)
                self._sync()
        except KeyboardInterrupt:  # Ctrl-C stops the waiting, not the sweep: one line, no traceback
            say(f"Stopped waiting for sweep {self.sweep_id}; it keeps launching and its runs keep being tracked "
                "(sweep.stop() stops launching).")
        return self

    @property
    def done(self) -> bool:
        return not self.launching and all(r.done for r in self.runs)

    # ---------------------------------------------------------------- numbers

    @property
    def counts(self) -> dict[str, int]:
        """Runs by status (reused runs count as completed)."""
        return dict(collections.Counter(r.status for r in self.runs))

    @property
    def spent(self) -> float:
        """Final charges known so far (USD), failed attempts that were retried included."""
        return self._engine.exposure(sweep_id=self.sweep_id).charged

    @property
    def pending_charges(self) -> int:
        """Runs FLORA finished whose charge it has not reported yet (money still to come)."""
        return sum(1 for r in self.runs if r.status in TERMINAL and r.charged_cost is None and not r.reused_from)

    @property
    def reserved(self) -> float:
        """USD held against the budget for launched runs whose charge is not known yet."""
        return self._engine.exposure(sweep_id=self.sweep_id).reserved

    @property
    def budget_left(self) -> float | None:
        """What the budget can still take (USD): budget - charged - reserves; None without a budget."""
        if self.budget is None:
            return None
        return max(0.0, self.budget - self._engine.exposure(sweep_id=self.sweep_id).committed)

    @property
    def estimated_remaining(self) -> float:
        """Estimated cost of runs not finished yet (USD)."""
        return sum(r.estimated_cost or 0.0 for r in self.runs if not r.done)

    @property
    def rate_limit_wait(self) -> float:
        """Seconds FLORA's 429 asks this session to hold every request for (0 when not rate limited)."""
        return self._engine.rate_limit_wait

    @property
    def health(self) -> str:
        """``ok``, or what keeps this sweep's session from FLORA (e.g. "FLORA unreachable, retrying")."""
        return self._engine.health

    @property
    def eta_seconds(self) -> float | None:
        """Rough seconds until done: a rate-limit wait, then waves of ``max_concurrency`` runs."""
        durations = [r.estimated_seconds for r in self.runs if r.estimated_seconds is not None]
        if self.done:
            return 0.0
        waiting = sum(1 for r in self.runs if r.status == QUEUED)
        hold = self.rate_limit_wait  # starts and polls alike wait it out
        if not durations:
            return hold or None
        per_run = sum(durations) / len(durations)
        return hold + per_run * (1 + waiting / max(1, self.max_concurrency))

    # ---------------------------------------------------------------- frames

    def to_dataframe(self) -> pd.DataFrame:
        """The runs schema plus ``variation``, ``repeat`` and ``reused``, varied inputs first."""
        from ._frames import ledger_runs, sweep_frame

        frame = ledger_runs(self._engine.ledger, self._engine.endpoint, sweep_id=self.sweep_id)
        current = frame["local_id"].isin([r.local_id for r in self.runs])  # not failed runs retried since
        return sweep_frame(frame[current].reset_index(drop=True), self.varied)

    def compare(self, values: str = "charged_cost", index: str | Sequence[str] | None = None,
                columns: str | Sequence[str] | None = None, aggfunc: str | Callable[..., Any] | None = None) -> pd.DataFrame:
        """A pivot of ``values`` over the varied inputs (defaults chosen from what varies)."""
        from ._frames import compare_frame

        return compare_frame(self.to_dataframe(), self.varied, values, index, columns, aggfunc)

    def costs(self, by: str | Sequence[str] | None = None) -> pd.DataFrame:
        """Cost summary of this sweep, by the varied inputs unless ``by`` is given."""
        from ._frames import cost_summary

        frame = self.to_dataframe()
        keys = by or ([f"input.{k}" for k in self.varied] or "technique_name")
        return cost_summary(frame, keys)

    def download(self, directory: str | Path = ".") -> list[Path]:
        """Save every output, named by variation and varied inputs; returns the paths written."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        repeats: collections.Counter[int] = collections.Counter()
        taken: set[Path] = set()
        for run in self.runs:
            number = run.variation or 0
            stem = f"v{number:03d}_r{repeats[number]}_{_slug(run.inputs, self.varied)}"
            repeats[number] += 1
            for out in run.outputs if run.status == COMPLETED else []:
                paths.append(out.save(output_path(folder, [stem, out.output_id], out.extension, taken)))
        return paths

    def plot(self) -> Any:
        """Charged USD and run time per variation, as step lines (needs ``pip install 'flora_nb[plot]'``)."""
        from ._plots import plot_sweep

        return plot_sweep(self.to_dataframe(), self.varied)

    def gallery(self, columns: int | None = None) -> Any:
        """Outputs side by side in an ipywidgets grid laid out by the varied inputs."""
        from ._display import build_gallery

        return build_gallery(self, columns=columns)

    # ---------------------------------------------------------------- display

    def _summary_rows(self) -> list[tuple[str, str]]:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))
        eta = self.eta_seconds
        rows = [
            ("sweep", self.sweep_id), ("technique", f"{self.technique.name} ({self.technique.technique_id})"),
            ("varied", ", ".join(self.varied) or "nothing (repeats)"), ("runs", f"{len(self.runs)}: {counts}"),
            ("spent", charged_so_far(self.spent, self.pending_charges)),
            ("estimated remaining", usd(self.estimated_remaining)),
            ("ETA", "done" if self.done else ("unknown" if eta is None else f"~{duration(eta)}")),
        ]
        if self.budget is not None:
            rows.append(("budget", f"{usd(self.budget)} ({usd(self.budget_left or 0.0)} left)"))
        if self.rate_limit_wait > 0:
            rows.append(("rate limited", f"FLORA asked to wait {self.rate_limit_wait:.1f} s"))
        if self.stop_reason:
            rows.append(("stopped launching", self.stop_reason))
        if self.reusable and not any(r.reused_from for r in self.runs):
            saving = self.reusable * (self.technique.run_cost or 0.0)
            rows.append(("could reuse", f"{self.reusable} runs already in the ledger; reuse=True would save {usd(saving)}"))
        return rows

    def __repr__(self) -> str:
        return "<Sweep " + "; ".join(f"{k}: {v}" for k, v in self._summary_rows()) + ">"

    def _ipython_display_(self) -> None:
        from ._display import display_live

        display_live(self)

    def _repr_html_(self) -> str:
        return card_html(self._summary_rows(), "flora-sweep")


def _wanted_codes(codes: str | Sequence[str] | None) -> set[str] | None:
    """``codes=`` as the table spells them; None: retry what FLORA's hint says can succeed."""
    if codes is None:
        return None
    given = [codes] if isinstance(codes, str) else codes
    if not isinstance(given, (list, tuple, set, frozenset)) or not all(normal_code(c) for c in given):
        raise InputError("codes must be a list of FLORA error codes such as GENERATION_NO_RESULT (the "
                         "error_code column of the sweep's failures); nothing was retried.")
    return {normal_code(c) or "" for c in given}


def _chosen(run: Run, wanted: set[str] | None) -> bool:
    if wanted is None:
        return hint_for(run.error_code, run.error_message) in RETRYABLE
    return normal_code(run.error_code) in wanted


def _by_hint(runs: Sequence[Run], codes: bool) -> str:
    """"2 retry now, 1 change input: GENERATION_PROMPT_MODERATED" (hints in HINTS order)."""
    groups: dict[str, list[str]] = {}
    for run in runs:
        hint = hint_for(run.error_code, run.error_message)
        label = normal_code(run.error_code) or "no code"
        if hint != hint_for(run.error_code):  # the message, not the code, decided: say why
            label += " (safety refusal)"
        groups.setdefault(hint, []).append(label)
    parts = []
    for hint in [h for h in HINTS if h in groups]:
        labels = groups[hint]
        parts.append(f"{len(labels)} {hint}" + (": " + ", ".join(sorted(set(labels))) if codes else ""))
    return "; ".join(parts) if codes else ", ".join(parts)


def _retry_line(retried: Sequence[Run], left: Sequence[Run], wanted: set[str] | None) -> str:
    """What retry_failed() did, in one line: how many it retried and left, by hint."""
    if not retried and not left:
        return "Nothing to retry: no run of this sweep has failed."
    line = f"Retried {len(retried)} failed run{'s' if len(retried) != 1 else ''}"
    line += f" ({_by_hint(retried, codes=wanted is not None)})" if retried else ""
    if any(hint_for(r.error_code, r.error_message) == RETRY_LATER for r in retried):
        line += "; the retry-later ones may fail again while FLORA is busy (then retry them in a few minutes)"
    if left:
        line += f"; left {len(left)}, not started again ({_by_hint(left, codes=True)})"
        line += "; retry_failed with their codes starts them anyway" if wanted is None else ""
    missing = sorted(wanted - {normal_code(r.error_code) for r in [*retried, *left]}) if wanted else []
    if missing:
        line += f"; no failed run has {', '.join(missing)}"
    return line + "."


def _slug(inputs: dict[str, Any], varied: Sequence[str]) -> str:
    return "_".join(_slug_text(str(inputs.get(k, ""))) for k in varied) or "run"


def _slug_text(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "x"
