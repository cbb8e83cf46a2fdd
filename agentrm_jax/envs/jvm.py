"""One Java simulator per process, shared by every env that runs on it (ScienceWorld, TextWorldExpress).

Their Python packages start a JVM behind a py4j gateway per simulator object; we start one per
process and make each episode's simulator inside it. A forked child gets its own (the parent's
gateway does not survive a fork).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from typing import Any

JAVA_HINT = "install Java 17, e.g. apt-get install -y openjdk-17-jre-headless"


def java_available() -> bool:
    """Whether a `java` executable is on the PATH."""
    return shutil.which("java") is not None


class SharedJvm:
    """The process's one simulator gateway, made by `start()` on first use (and again after a fork)."""

    def __init__(self, start: Callable[[], Any]):
        self._start = start
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._env: Any = None

    def get(self, *, java: Callable[[], bool], who: str, simulator: str) -> Any:
        """The gateway object; RuntimeError naming `who` and `simulator` when `java()` finds no Java."""
        with self._lock:
            if self._pid == os.getpid():
                return self._env
            if not java():
                raise RuntimeError(f"{who}: {simulator} runs on Java, but no `java` is on the PATH; {JAVA_HINT}")
            self._env, self._pid = self._start(), os.getpid()
            return self._env

    def detach(self, obj: Any) -> None:
        """Release a Java object made through this process's gateway (best effort: a no-op when none)."""
        if self._env is None or self._pid != os.getpid():
            return
        try:
            self._env._gateway.detach(obj)
        except Exception:  # noqa: BLE001 - releasing a Java object is best effort
            pass
