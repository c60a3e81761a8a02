"""The worker loop: run due jobs every few seconds until told to stop."""

from __future__ import annotations

import logging
import threading

from trofast.kit.clock import Clock
from trofast.kit.db import Database
from trofast.worker.jobs import JobReport, run_due

log = logging.getLogger("trofast.worker")


class Worker:
    """Runs `run_due` every `interval` seconds in a background thread."""

    def __init__(self, db: Database, clock: Clock, interval: float = 30.0) -> None:
        self.db, self.clock, self.interval = db, clock, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> JobReport:
        report = run_due(self.db, self.clock)
        if report.vested or report.expired:
            log.info("vested %d lots, expired %d lots", report.vested, report.expired)
        return report

    def run_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a failed round is logged and retried next round
                log.exception("worker round failed")
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name="trofast-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
