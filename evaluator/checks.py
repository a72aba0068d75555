"""Start-up checks (Django's system checks): what the sandbox can do on this machine.

They run before every management command that checks (migrate, run, the worker's
Django set-up), so a machine without bubblewrap says so at start-up, not when the
first upload silently waits.
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from evaluator.engine import isolation


@register(Tags.security)
def sandbox_isolation(app_configs, **kwargs) -> list[Warning]:
    if not settings.SANDBOX_ISOLATION:
        return [Warning(
            "SANDBOX_ISOLATION is off: uploaded models run WITHOUT bubblewrap and can read and "
            "write everything the worker can. Development only.",
            hint="Unset SANDBOX_ISOLATION (or set it to on) anywhere untrusted uploads are accepted.",
            id="evaluator.W001",
        )]
    if problem := isolation.bwrap_problem():
        return [Warning(
            f"evaluation sandbox unavailable: {problem}. Uploads will wait (status queued) "
            "until it is; the reference suite is built without it.",
            hint="Install bubblewrap (apt-get install bubblewrap); it needs user namespaces.",
            id="evaluator.W002",
        )]
    return []


# (setting, lowest sensible value): below these a job cannot even import TensorFlow.
_LIMITS = (("SANDBOX_TIMEOUT_S", 10), ("SANDBOX_MEMORY_MB", 512), ("JOB_MAX_ATTEMPTS", 1),
           ("PEER_TIMEOUT_FACTOR", 1), ("PEER_TIMEOUT_MARGIN_S", 5))


@register()
def sandbox_limits(app_configs, **kwargs) -> list[Error]:
    errors = []
    for name, low in _LIMITS:
        value = getattr(settings, name)
        if value < low:
            errors.append(Error(f"{name}={value} is below {low}; jobs could not run", id="evaluator.E001"))
    longest = settings.JOB_MAX_ATTEMPTS * settings.SANDBOX_TIMEOUT_S
    soft, hard = settings.CELERY_TASK_SOFT_TIME_LIMIT, settings.CELERY_TASK_TIME_LIMIT
    if soft <= longest or hard <= soft:
        errors.append(Error(
            f"CELERY_TASK_SOFT_TIME_LIMIT={soft} and CELERY_TASK_TIME_LIMIT={hard} must exceed "
            f"JOB_MAX_ATTEMPTS × SANDBOX_TIMEOUT_S = {longest}, the hard one the soft one; otherwise "
            "Celery stops jobs that their own limits allow", id="evaluator.E002"))
    return errors
