"""Cloud 66's rate budget: so many API requests per token per window, ``503 throttled`` past it.

Each token has one window at a time; the first request after a window has ended opens the next one.
Every authenticated API request is counted in its token's window (:meth:`_Budget._charge`), served
or throttled, and the window's start goes into its :class:`.RecordedRequest`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from airflow_provider_c66.testing.emulator.state import _State


@dataclass
class _Window:
    start: float = -math.inf
    used: int = 0


@dataclass(frozen=True)
class _Charge:
    """One API request counted against its token's budget."""

    window: float
    """The start of the window that counted it."""
    headers: list[tuple[str, str]]
    """The ``X-RateLimit-*`` headers of its answer."""
    throttled: bool
    """The budget was already spent: the answer is ``503 throttled``."""


class _Budget(_State):
    """The rate budget of every token: :meth:`set_remaining`, :meth:`budget_resets_at`."""

    token: str
    hourly_budget: int
    budget_window: float
    _windows: dict[str, _Window]

    def set_remaining(self, n: int) -> None:
        """Set the default token's remaining budget in the current window (0: next call is throttled).

        The hooks of this process forget what they learned of the budget, as if their clocks had
        moved past its reset too: a test's "the hour has passed" reaches both sides.
        """
        from airflow_provider_c66.api import RateBudget

        RateBudget.forget_shared()
        with self._lock:
            window = self._window(self.token, time.time())
            window.used = self.hourly_budget - n

    def budget_resets_at(self, token: str | None = None) -> float:
        """Epoch seconds at which the token's current budget window ends (what a throttled answer's
        ``X-RateLimit-Reset`` says)."""
        with self._lock:
            window = self._window(token or self.token, time.time())
            return window.start + self.budget_window

    def _window(self, token: str, now: float) -> _Window:
        window = self._windows.setdefault(token, _Window())
        if now >= window.start + self.budget_window:
            window.start, window.used = now, 0
        return window

    def _charge(self, token: str) -> _Charge:
        """Count one API request of ``token`` in its current window, unless the budget is spent."""
        with self._lock:
            now = time.time()
            window = self._window(token, now)
            if window.used >= self.hourly_budget:
                rate = [
                    ("X-RateLimit-Limit", str(self.hourly_budget)),
                    ("X-RateLimit-Remaining", "0"),
                    ("X-RateLimit-Reset", str(math.ceil(window.start + self.budget_window))),
                ]
                return _Charge(window.start, rate, throttled=True)
            window.used += 1
            rate = [
                ("X-RateLimit-Limit", str(self.hourly_budget)),
                ("X-RateLimit-Remaining", str(max(0, self.hourly_budget - window.used))),
            ]
            return _Charge(window.start, rate, throttled=False)
