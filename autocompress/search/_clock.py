"""The whole-job time budget (``--time``): the search takes a share of it, the final fine-tune the rest.

The trials stop starting once ``SEARCH_SHARE`` of the budget is spent, the front's trials once
``FRONT_SHARE`` is; the short fine-tunes of the short list and of the front's points follow. Then the
final fine-tune measures its own step (with its distillation and number format) and sizes its cosine
schedule to the time left, less what evaluating, packing and reporting the result will take.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

SEARCH_SHARE = 0.25  # of the budget, at most, until the last trial starts
FRONT_SHARE = 0.35  # of the budget, at most, until the front's last trial starts
FINISHING_SECONDS = 20.0  # packing, the report files and their plots, after the last evaluation


@dataclass(frozen=True)
class JobClock:
    """When the job started (``time.monotonic``) and how long it may take in all."""

    started: float
    budget_seconds: float

    @classmethod
    def start(cls, budget_seconds: float) -> JobClock:
        return cls(time.monotonic(), budget_seconds)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        """Seconds left of the whole budget (negative once it is spent)."""
        return self.budget_seconds - self.elapsed()

    def search_remaining(self, share: float = SEARCH_SHARE) -> float:
        """Seconds left for starting trials (never negative) until ``share`` of the budget is spent."""
        return max(share * self.budget_seconds - self.elapsed(), 0.0)

    def front_remaining(self) -> float:
        """Seconds left for starting the front's trials (never negative) until ``FRONT_SHARE`` of the budget is spent."""
        return self.search_remaining(FRONT_SHARE)

    def end_text(self) -> str:
        """The wall-clock time the budget runs out, as HH:MM:SS."""
        return time.strftime("%H:%M:%S", time.localtime(time.time() + self.remaining()))
