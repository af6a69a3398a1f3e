"""Ctrl-C that always stops the search, even when it lands where Python swallows exceptions."""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType


class InterruptGuard:
    """While active, SIGINT raises ``KeyboardInterrupt`` as usual and is also remembered.

    An interrupt that arrives inside a weakref or garbage-collector callback (SQLAlchemy
    registers some; Optuna collects garbage after every trial) is printed and dropped by
    the interpreter, and the search would run on. :meth:`check`, called after every
    training step and every trial, raises it again at that safe point. Outside the main
    thread (where signal handlers cannot be set), and where SIGINT is ignored or has a
    handler of its own, the guard does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: signal.Handlers | object | None = None
        self._installed = False

    def __enter__(self) -> InterruptGuard:
        # like the interpreter: leave SIGINT alone where it is ignored (nohup) or handled by someone else
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
            self._installed = False

    def _on_sigint(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested = True
        raise KeyboardInterrupt

    def check(self, *_: object) -> None:
        """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed (accepts and ignores callback arguments)."""
        if self.requested:
            raise KeyboardInterrupt
