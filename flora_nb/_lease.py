"""A session's lease in a shared (team) ledger: renewed while the session lives, ended when it closes.

Another host's process id means nothing here, so the ledger asks the lease instead: a kernel that
was killed stops renewing, and within ``LEASE_SECONDS`` its unresolved starts and queued runs are
known to be nobody's (``Ledger.owner_alive``). The lease is kept on the database's clock, so hosts
whose clocks differ agree on it. Nothing prints from the renewing thread: trouble shows in
``fl.status()`` (``ledger_lease``).
"""

from __future__ import annotations

import socket
import threading

from ._ledger import Ledger

__all__ = ["LEASE_SECONDS", "RENEW_SECONDS", "Lease"]

LEASE_SECONDS = 60.0  # how long a session counts as alive after its last renewal
RENEW_SECONDS = 15.0  # how often a live session renews (four chances before its lease runs out)


class Lease:
    """Holds ``owner``'s lease in ``ledger`` from a daemon thread until ``stop()``."""

    def __init__(self, ledger: Ledger, owner: str, user: str | None, every: float = RENEW_SECONDS):
        self._ledger, self._owner, self._user, self._every = ledger, owner, user, every
        self._host = socket.gethostname()
        self._stop = threading.Event()
        self.trouble: str | None = None  # why the last renewal failed (None: it did not)
        self._renew()  # in the caller first: a ledger that cannot hold a lease fails the connect
        self._thread = threading.Thread(target=self._loop, name="flora_nb-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        self._ledger.renew_lease(self._owner, self._user, self._host, LEASE_SECONDS)

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._renew()
                self.trouble = None
            except Exception as exc:  # a dropped server, a closed ledger: say so in status, try again later
                self.trouble = f"the lease could not be renewed: {exc}"

    def stop(self) -> None:
        """End the lease now (the session is closing); other sessions see it gone at once."""
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._ledger.end_lease(self._owner)
        except Exception as exc:  # the lease runs out by itself within LEASE_SECONDS
            self.trouble = f"the lease could not be ended: {exc}"
