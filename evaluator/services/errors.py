"""How a job can end other than with its value (raised by services.jobs.job_run)."""

from __future__ import annotations


class JobRejected(Exception):
    """The network broke the contract; the message is for the user."""


class JobFailed(Exception):
    """An internal error that survived every attempt; the message is for the user."""


class JobCancelled(Exception):
    """An admin cancelled the job while it was queued or running."""


class JobSuperseded(JobCancelled):
    """A newer run owns the network (rerun, deletion) or a newer attempt owns the job
    (another worker took it over): this one stops and writes nothing more."""


class JobUnavailable(Exception):
    """Untrusted work cannot run here: the isolation it requires is missing."""


# What a network page shows when a stored model no longer matches its accepted hashes;
# the file and the details go to the job log, for staff.
MODEL_CHANGED = "stored model changed since it was accepted; an administrator has been notified"
