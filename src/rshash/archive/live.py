"""The archive a server searches, reopened when a writer publishes a new generation."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from rshash import RshashError
from rshash.archive.store import Index, read_index


class LiveIndex:
    """The index a server searches, reopened when its manifest is replaced (by
    ``rshash index append`` or ``remove``): a thread checks the manifest file
    every ``poll`` seconds and swaps the new generation in with one assignment, so a
    request (which reads :attr:`current` once) sees one generation throughout. A new
    generation that cannot be opened is reported on stderr and the old one kept."""

    def __init__(self, location, poll: float = 1.0):
        self.location, self.poll = Path(location), poll
        self._stamp = self._stat()
        self.current: Index = read_index(self.location)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _stat(self):
        try:
            st = os.stat(self.location)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def refresh(self) -> bool:
        """Reopen the index if its manifest changed; whether it did."""
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return False
        try:
            index = read_index(self.location)
        except RshashError as err:
            print(
                f"rshash serve: keeping generation {self.current.generation}: {err}",
                file=sys.stderr,
            )
            return False
        self._stamp, self.current = stamp, index
        print(
            f"rshash serve: {self.location} generation {index.generation}, {len(index)} images",
            file=sys.stderr,
        )
        return True

    def start(self) -> LiveIndex:
        def loop():
            while not self._stop.wait(self.poll):
                self.refresh()

        self._thread = threading.Thread(target=loop, name="rshash-index-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
