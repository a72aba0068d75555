"""Worker start-up hook: recover what a previous worker left half done."""

from __future__ import annotations

import logging

from celery.signals import worker_ready

log = logging.getLogger(__name__)


@worker_ready.connect
def reap_on_start(sender=None, **kwargs) -> None:
    from evaluator.services.reaper import jobs_reap

    try:
        jobs_reap()
    except Exception:  # never keep a worker from starting
        log.exception("reaper failed at worker start")
