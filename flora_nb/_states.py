"""The status vocabulary, defined once: what a ledger row's ``status`` and start ``error_code`` say.

A row is ``queued`` (planned, nothing sent), ``starting`` (its POST is being sent, or its answer was
lost and it is being reconciled), then takes FLORA's statuses ``pending`` / ``running`` /
``completed`` / ``failed``, or ends ``skipped`` (never started: budget, stop, rate limit, proved
never received). Every other module imports these names instead of spelling the strings out.
"""

from __future__ import annotations

__all__ = [
    "ACTIVE", "CLOSED", "COMPLETED", "DONE", "FAILED", "INPUTS_DIFFER", "LOST", "NOT_RECEIVED",
    "NOT_RECEIVED_IN_GROUP_MESSAGE", "NOT_RECEIVED_MESSAGE", "OPEN",
    "PENDING", "QUEUED", "RUNNING", "SERVER_STATUSES", "SKIPPED", "STARTING", "STATUSES", "TERMINAL",
    "UNCONFIRMED", "UNCONFIRMED_MESSAGE", "UNSTARTED", "WORKING",
]

QUEUED = "queued"
STARTING = "starting"
PENDING = "pending"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
SKIPPED = "skipped"

STATUSES = (QUEUED, STARTING, PENDING, RUNNING, COMPLETED, FAILED, SKIPPED)  # a row's life, in order
SERVER_STATUSES = (PENDING, RUNNING, COMPLETED, FAILED)  # what FLORA itself says of a run
WORKING = (PENDING, RUNNING)  # FLORA has the run and is not done with it
ACTIVE = (STARTING,) + WORKING  # the poller still has work for the row
OPEN = (QUEUED,) + ACTIVE  # not finished: may still be charged
UNSTARTED = (QUEUED, SKIPPED)  # no run on FLORA (yet): nothing charged
TERMINAL = (COMPLETED, FAILED)  # FLORA is done with the run (its charge may still come)
DONE = TERMINAL + (SKIPPED,)  # nothing more will happen to the row

CLOSED = "session closed"  # the health of a closed session (its displays stop drawing)

# A ``starting`` row without a run id says why in its error_code:
LOST = "start_lost"  # the answer to a start never came: reconciling
UNCONFIRMED = "start_unconfirmed"  # reconciling could not decide within the grace period (resume() looks again)
NOT_RECEIVED = "start_not_received"  # reconciling proved FLORA made no run for this start: nothing was charged

UNCONFIRMED_MESSAGE = ("The start's answer was lost and no matching run was found on FLORA; "
                       "fl.resume() looks again. It was never started twice.")
# A start bound as one of a group (its answer was lost together with others'): FLORA made fewer runs
# than the group sent, and which start made none is not known. Never advise paying again on a guess.
INPUTS_DIFFER = "inputs differ"  # in a group-bound row's pairing: its run may carry another row's inputs
NOT_RECEIVED_IN_GROUP_MESSAGE = (
    "FLORA made fewer runs than the starts whose answers were lost together with this one (local ids {ids}), "
    "and which start made none is not known: this row's inputs may have run under another row of the group. "
    "Nothing is charged to this row. Look at the group's rows before starting it again: sweep.resume() resends "
    "it with its own key, which FLORA never runs twice (for 2 hours).")
NOT_RECEIVED_MESSAGE = ("FLORA never received this start: it made no run for it and charged nothing. "
                        "sweep.resume() sends it again with its own key; a single run: call fl.run(...) again.")
