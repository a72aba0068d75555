"""Worker start-up hooks: recover what a previous worker left half done; warm a
sandbox child for the first job."""

from __future__ import annotations

import logging

from celery.signals import worker_process_init, worker_process_shutdown, worker_ready

log = logging.getLogger(__name__)


@worker_ready.connect
def reap_on_start(sender=None, **kwargs) -> None:
    from evaluator.services.reaper import jobs_reap

    try:
        jobs_reap()
    except Exception:  # never keep a worker from starting
        log.exception("reaper failed at worker start")


@worker_process_init.connect
def spare_on_start(sender=None, **kwargs) -> None:
    """In each process that will run tasks (the solo pool's, or each prefork child):
    the first job finds TensorFlow imported already."""
    from evaluator.services.spares import spare_enable

    try:
        spare_enable()
    except Exception:  # an optimisation: never keep a worker from starting
        log.exception("could not start a spare sandbox child")


@worker_process_shutdown.connect
def spares_on_shutdown(sender=None, **kwargs) -> None:
    """The spares die with the process (bubblewrap's --die-with-parent); their folders
    are removed here rather than at the next start."""
    from evaluator.services.spares import spares_release

    try:
        spares_release()
    except Exception:  # shutting down: nothing left to protect
        log.exception("could not release the spare sandbox children")
