"""Spare sandbox children: TensorFlow imported before a job arrives.

A worker's task process keeps one spare child (settings.SANDBOX_SPARE) whose import
overlaps the worker's idle time; the next job runs in it (services.jobs takes it with
spare_take). Before a run of short jobs (an upload's column) a few more are started
ahead. Each serves one job and exits, so the isolation is the same as a cold child's
(docs/SECURITY.md §2.3).
"""

from __future__ import annotations

import logging
import os
import threading

from django.conf import settings

from evaluator.engine.sandbox import SandboxLimits, SandboxUnavailable, SpareChild
from evaluator.services import storage
from evaluator.services.sandboxing import isolation_problem, sandbox_limits

log = logging.getLogger(__name__)

# What a spare child imports before its job arrives: every engine job needs TensorFlow.
PRELOAD = ("tensorflow",)

# This process's spare sandbox child (settings.SANDBOX_SPARE): it imports TensorFlow
# (2–3 s, up to a fifth of an upload's wait) while the worker is idle, and the next job
# runs in it. Only in Celery's task-running processes (spare_enable, from the
# worker_process_init signal): a command that runs a few jobs and exits has no use
# for one. Owned by the pid that started it: a forked process must not use its parent's.
_spare: SpareChild | None = None
_spare_owner = 0
_spare_wanted = False
_spare_lock = threading.Lock()  # a threads pool would share this process's spare
# More spares started ahead of a run of short jobs (spares_ahead); spare_prepare takes
# from here first.
_ahead: list[SpareChild] = []


def spare_enable() -> None:
    """This process runs jobs for a worker: keep a spare child from now on."""
    global _spare_wanted
    _spare_wanted = True
    spare_prepare()


def _new_spare() -> SpareChild | None:
    try:
        return SpareChild(storage.spare_workdir(), limits=sandbox_limits(), preload=PRELOAD)
    except SandboxUnavailable:
        log.exception("no spare sandbox child")
        return None


def spare_prepare() -> None:
    """Make sure this process has a live spare child (after every job): the first of the
    spares started ahead, or a new one. Does nothing with SANDBOX_SPARE off or outside a
    worker."""
    global _spare, _spare_owner
    if not (settings.SANDBOX_SPARE and _spare_wanted) or isolation_problem():
        return
    with _spare_lock:
        if _spare_owner != os.getpid():  # started by the process this one was forked from
            _spare = None
            _ahead.clear()
        if _spare is not None and _spare.alive():
            return
        _spare = None
        while _ahead and _spare is None:
            candidate = _ahead.pop(0)
            _spare = candidate if candidate.alive() else None
        _spare = _spare or _new_spare()
        _spare_owner = os.getpid()


def spares_ahead(count: int) -> None:
    """Start up to `count` more spare children now, beside the usual one: a run of short
    jobs is coming (an upload's column, one job per peer), and each would otherwise wait
    for its own TensorFlow import. They import in parallel while the first jobs run."""
    if not (settings.SANDBOX_SPARE and _spare_wanted) or isolation_problem() or _spare_owner != os.getpid():
        return
    with _spare_lock:
        _ahead[:] = [s for s in _ahead if s.alive()]
        while len(_ahead) < count and (spare := _new_spare()) is not None:
            _ahead.append(spare)


def spares_trim() -> None:
    """Back to one spare once the run of short jobs is over (each holds ~0.6 GB)."""
    with _spare_lock:
        extra, _ahead[:] = list(_ahead), []
    for spare in extra:
        spare.discard()
        storage.remove_tree(spare.workdir)


def spares_release() -> None:
    """Stop every spare of this process and remove their folders (the worker is shutting
    down). A folder left by a killed worker is removed by the next spare_workdir()."""
    global _spare
    with _spare_lock:
        spares, _spare = ([_spare] if _spare is not None and _spare_owner == os.getpid() else []) + _ahead, None
        _ahead.clear()
    for spare in spares:
        spare.discard()
        storage.remove_tree(spare.workdir)


def spares_waiting() -> list[SpareChild]:
    """This process's live spares, which hold nothing until a job's request: what a check
    for left-over children or job folders sets aside."""
    with _spare_lock:
        candidates = ([_spare] if _spare is not None and _spare_owner == os.getpid() else []) + list(_ahead)
    return [spare for spare in candidates if spare.alive()]


def spare_take(limits: SandboxLimits) -> SpareChild | None:
    """The spare for a job with these limits, or None (then the job starts cold)."""
    global _spare
    with _spare_lock:
        spare, _spare = _spare, None
    if spare is None or _spare_owner != os.getpid():
        return None
    if not spare.matches(limits, None):  # the settings changed since it started
        log.info("spare child discarded: started with %s, the job needs %s", spare.limits, limits)
        spare.discard()
        storage.remove_tree(spare.workdir)
        return None
    return spare
