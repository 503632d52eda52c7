"""How many starts of one technique may be out without an answer: a window, as TCP's congestion window.

FLORA's run history carries no inputs, so when several starts of one technique lose their answers
while out together, which run came from which start can only be told as a group (``_matching``).
The window keeps such groups rare: it opens while answers come back (one more start per answer,
up to ``CAP``, so a healthy sweep is not slowed), and falls to one start at a time after a lost
answer, then opens by one start only after a full window of answers and ``PATIENCE`` more. A start waits for room before it
is sent; it never waits for a lost start to be found.
"""

from __future__ import annotations

import threading
from typing import Callable

__all__ = ["CAP", "INITIAL", "PATIENCE", "StartWindow"]

INITIAL = 64  # starts out at once before any answer came back (losses are seen within ms: the window shuts then)
PATIENCE = 3  # after a loss, the window opens by one only after this many answers more than its size
CAP = 1024


class StartWindow:
    """Room for starts without an answer; ``take()`` before sending, ``answered()`` / ``lost()`` after."""

    def __init__(self, initial: int = INITIAL, cap: int = CAP):
        self.size = initial
        self.out = 0
        self.cap = cap
        self._careful = False  # after a loss: grow by one per full window of answers, not one per answer
        self._credit = 0
        self._cond = threading.Condition()

    def take(self, stop: Callable[[], bool] = lambda: False) -> bool | None:
        """Wait for room and take it: True if it had to wait, False at once, None (nothing taken)
        when ``stop()`` says so meanwhile."""
        waited = False
        with self._cond:
            while self.out >= self.size:
                if stop():
                    return None
                waited = True
                self._cond.wait(0.2)  # short: Ctrl-C and stop() are seen soon
            self.out += 1
            return waited

    def answered(self) -> None:
        """A start got its answer (a run, or a refusal): the window opens a little."""
        with self._cond:
            self.out = max(0, self.out - 1)
            if not self._careful:
                self.size = min(self.cap, self.size + 1)
            else:
                self._credit += 1
                if self._credit >= self.size + PATIENCE:
                    self._credit = 0
                    self.size = min(self.cap, self.size + 1)
            self._cond.notify_all()

    def shrink(self) -> None:
        """An attempt went unanswered (the client is about to try again): one start at a time from now."""
        with self._cond:
            self.size, self._careful, self._credit = 1, True, 0

    def lost(self) -> None:
        """A start's answer was lost: one start at a time from now, opening again slowly."""
        with self._cond:
            self.out = max(0, self.out - 1)
            self.size, self._careful, self._credit = 1, True, 0
            self._cond.notify_all()
