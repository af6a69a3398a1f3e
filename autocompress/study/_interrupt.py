"""Ctrl-C that always stops the search, even when it lands where Python swallows exceptions."""

from __future__ import annotations

import logging
import signal
import sys
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

    While active it also keeps tracebacks of the stop off the screen: the one Optuna logs with a
    trial that Ctrl-C stopped, and the "Exception ignored in" the interpreter prints for an interrupt
    it dropped (the guard raises that one again). The user asked for the stop; the line that says so
    is enough.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: signal.Handlers | object | None = None
        self._installed = False
        self._previous_unraisable = sys.unraisablehook

    def __enter__(self) -> InterruptGuard:
        for handler in _optuna_handlers():
            handler.addFilter(_without_interrupt_traceback)
        # like the interpreter: leave SIGINT alone where it is ignored (nohup) or handled by someone else
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._previous_unraisable = sys.unraisablehook
            sys.unraisablehook = self._on_unraisable
            self._installed = True
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        for handler in _optuna_handlers():
            handler.removeFilter(_without_interrupt_traceback)
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
            sys.unraisablehook = self._previous_unraisable
            self._installed = False

    def _on_unraisable(self, unraisable: sys.UnraisableHookArgs) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt) and self.requested:
            return  # dropped where Python swallows exceptions; check() raises it again
        self._previous_unraisable(unraisable)

    def _on_sigint(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested = True
        raise KeyboardInterrupt

    def check(self, *_: object) -> None:
        """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed (accepts and ignores callback arguments)."""
        if self.requested:
            raise KeyboardInterrupt


def _optuna_handlers() -> list[logging.Handler]:
    return list(logging.getLogger("optuna").handlers)


def _without_interrupt_traceback(record: logging.LogRecord) -> bool:
    """A log filter: the record stays, without the traceback of a ``KeyboardInterrupt``."""
    if record.exc_info and record.exc_info[0] is not None and issubclass(record.exc_info[0], KeyboardInterrupt):
        record.exc_info, record.exc_text = None, None
    return True
