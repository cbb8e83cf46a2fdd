"""Wait on a server thread until Ctrl-C or SIGTERM, then stop it: the end of `agentrm serve` and `agentrm envserve`."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable


def serve_until_interrupted(thread: threading.Thread, stop: Callable[[], None]) -> None:
    """Block while `thread` (a running server) lives; Ctrl-C or SIGTERM ends the wait, and `stop()` always runs.

    SIGTERM is turned into KeyboardInterrupt for the wait only (when called from the main thread; a
    signal handler cannot be set elsewhere), so `kill` shuts a server down as cleanly as Ctrl-C.
    """
    previous = None
    if threading.current_thread() is threading.main_thread():

        def _interrupt(signum, frame):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        print("shutting down", file=sys.stderr)
    finally:
        stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
