"""Which sandbox a job gets: whether untrusted models can be evaluated here, and the
limits every job runs under (SPEC §6; docs/SECURITY.md). Shared by the jobs and the
spare children started ahead of them, so neither imports the other for it."""

from __future__ import annotations

from django.conf import settings

from evaluator.engine import isolation
from evaluator.engine.sandbox import SandboxLimits


def isolation_problem() -> str:
    """Why untrusted models cannot be evaluated here ('' when they can)."""
    if not settings.SANDBOX_ISOLATION:
        return ""  # development mode: announced at start-up, runs without bubblewrap
    return isolation.bwrap_problem()


def sandbox_limits(*, trusted: bool = False) -> SandboxLimits:
    """The limits of a job. Untrusted work (anything that loads an upload's model) runs
    under bubblewrap unless SANDBOX_ISOLATION is off; trusted work (training the
    reference suite from the project's own code) uses it when it can."""
    isolated = settings.SANDBOX_ISOLATION and not (trusted and isolation.bwrap_problem())
    return SandboxLimits(
        timeout_s=settings.SANDBOX_TIMEOUT_S, memory_mb=settings.SANDBOX_MEMORY_MB, isolation=isolated
    )
