"""Writes of the leaderboard app: uploads, deletes, visibility, tokens, admin reruns."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.utils import timezone

from evaluator.models import AdversarialDataset, AuditResult, Evaluation, Job
from evaluator.services import storage
from leaderboard.models import ApiToken, Benchmark, Network

# A local file header, or the end-of-central-directory record of an empty zip (which the
# engine then refuses with "no saved_model.pb", a clearer reason than "wrong bytes").
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
GZIP_MAGIC = b"\x1f\x8b"
# Accepted file name endings and the format each one announces.
EXTENSIONS = {".zip": "zip", ".tar.gz": "tar.gz", ".tgz": "tar.gz"}
# Marks the admin log entry written when a young upload is deleted: it still counts
# toward the owner's hourly upload limit (deleting must not reset the limit).
DELETED_UPLOAD_MARK = "deleted upload (counts toward the upload rate limit)"
NAME_MAX = 100
DESCRIPTION_MAX = 5000
CHUNK = 1024 * 1024


class UploadError(ValueError):
    """The upload request is unacceptable; the message is shown to the user."""


def _archive_suffix(head: bytes) -> str:
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head.startswith(GZIP_MAGIC):
        return "tar.gz"
    raise UploadError("the file is not a .zip or .tar.gz archive (its first bytes say otherwise)")


def _extension_check(filename: str | None, suffix: str) -> None:
    """The client's file name must end in an accepted extension matching the bytes.

    A name without any extension (curl from stdin, a test client's field name) is judged
    by its leading bytes alone; the storage name never uses the client's name anyway.
    """
    if not filename:
        return
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].strip().lower()
    if "." not in base.strip("."):
        return
    shown = base if len(base) <= 80 else base[:77] + "..."
    for ext, kind in EXTENSIONS.items():
        if base.endswith(ext):
            if kind != suffix:
                raise UploadError(
                    f"the file is named '{shown}' but its first bytes say it is a .{suffix} archive; "
                    "rename it to match"
                )
            return
    raise UploadError(f"'{shown}' is not a .zip, .tar.gz or .tgz file; upload one of those")


def _clean_text(value: str, *, field: str, limit: int, required: bool) -> str:
    value = (value or "").strip()
    if required and not value:
        raise UploadError(f"{field} is required")
    if len(value) > limit:
        raise UploadError(f"{field} is longer than {limit} characters")
    if "\x00" in value:
        raise UploadError(f"{field} contains a NUL character")
    return value


def upload_rate_check(*, owner: AbstractBaseUser | None) -> None:
    if owner is None or owner.is_staff:
        return
    since = timezone.now() - timedelta(hours=1)
    recent = Network.objects.filter(owner=owner, created_at__gte=since).count()
    # Uploads deleted since: without these, upload-delete-upload would bypass the limit.
    recent += LogEntry.objects.filter(
        user=owner, action_flag=DELETION, action_time__gte=since, change_message=DELETED_UPLOAD_MARK,
    ).count()
    if recent >= settings.UPLOADS_PER_HOUR:
        raise UploadError(
            f"upload limit reached: {settings.UPLOADS_PER_HOUR} uploads per hour; try again later"
        )


def _copy_capped(source: BinaryIO, target: Path) -> int:
    """Stream to disk, stopping at the size cap (never trust a declared size)."""
    limit = settings.MAX_UPLOAD_BYTES
    written = 0
    with open(target, "wb") as out:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > limit:
                out.close()
                target.unlink(missing_ok=True)
                raise UploadError(f"the archive is larger than the {limit // (1024 * 1024)} MB limit")
            out.write(chunk)
    return written


def network_upload(
    *,
    benchmark: Benchmark,
    owner: AbstractBaseUser | None,
    name: str,
    archive: BinaryIO,
    description: str = "",
    is_public: bool = True,
    enqueue: bool = True,
    filename: str | None = None,
) -> Network:
    """Store an uploaded archive under a server-generated name and queue the pipeline.

    enqueue=False leaves the pipeline to the caller (the `rank` command runs it
    in-process). filename: the client's name for the file (web uploads), checked for
    an accepted extension; never used to name anything on disk.
    """
    from evaluator.tasks import pipeline_enqueue

    name = _clean_text(name, field="name", limit=NAME_MAX, required=True)
    description = _clean_text(description, field="description", limit=DESCRIPTION_MAX, required=False)
    upload_rate_check(owner=owner)
    if benchmark.state != Benchmark.State.READY:
        # Its dataset, universal set and ladder may not exist yet: nothing to rank against.
        raise UploadError(
            f"the benchmark {benchmark.name} is not ready yet ({benchmark.stage or benchmark.state}); "
            "try again once it is built"
        )
    head = archive.read(8)
    suffix = _archive_suffix(head)
    _extension_check(filename, suffix)
    archive.seek(0)
    with transaction.atomic():
        network = Network.objects.create(
            benchmark=benchmark, owner=owner, name=name, description=description,
            is_public=is_public, stage="queued",
        )
        target = storage.network_dir(network.pk) / f"upload.{suffix}"
        network.archive_bytes = _copy_capped(archive, target)
        network.archive = storage.relative(target)
        network.save(update_fields=["archive", "archive_bytes"])
        if enqueue:
            pipeline_enqueue(network)
    return network


def network_register_path(
    *,
    benchmark: Benchmark,
    path: Path,
    name: str,
    owner: AbstractBaseUser | None = None,
    enqueue: bool = True,
) -> Network:
    """The `rank` command: a SavedModel folder is zipped, an archive is taken as is."""
    import tempfile
    import zipfile

    path = Path(path)
    if path.is_dir():
        with tempfile.TemporaryFile() as tmp:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                for item in sorted(path.rglob("*")):
                    if item.is_file() and not item.is_symlink():
                        zf.write(item, Path("model") / item.relative_to(path))
            tmp.seek(0)
            return network_upload(
                benchmark=benchmark, owner=owner, name=name, archive=tmp, enqueue=enqueue
            )
    if not path.is_file():
        raise UploadError(f"{path} is neither a SavedModel folder nor an archive")
    with open(path, "rb") as fh:
        return network_upload(
            benchmark=benchmark, owner=owner, name=name, archive=fh, enqueue=enqueue
        )


def network_delete(*, network: Network) -> None:
    """Remove a network, its files, and its row and column of the matrix; re-rank."""
    from evaluator.tasks import enqueue_on_commit, rank_benchmark

    benchmark_id, pk = network.benchmark_id, network.pk
    with transaction.atomic():
        if network.owner_id and not network.is_reference and network.created_at >= timezone.now() - timedelta(hours=1):
            LogEntry.objects.create(
                user_id=network.owner_id, content_type=ContentType.objects.get_for_model(Network),
                object_id=str(pk), object_repr=network.name[:200], action_flag=DELETION,
                change_message=DELETED_UPLOAD_MARK,
            )
        network.delete()
        enqueue_on_commit(rank_benchmark, benchmark_id)
    shutil.rmtree(storage.media_path(f"networks/{pk}"), ignore_errors=True)


def network_set_public(*, network: Network, is_public: bool) -> Network:
    network.is_public = is_public
    network.save(update_fields=["is_public", "updated_at"])
    return network


def network_rerun(*, network: Network) -> Network:
    """Forget every result touching this network and run its pipeline again."""
    from evaluator.tasks import pipeline_enqueue

    with transaction.atomic():
        Evaluation.objects.filter(network=network).delete()
        Evaluation.objects.filter(source=network).delete()
        AdversarialDataset.objects.filter(network=network).delete()
        AuditResult.objects.filter(network=network).delete()
        Job.objects.filter(network=network, state__in=[Job.State.QUEUED, Job.State.RUNNING]).update(
            state=Job.State.CANCELLED, finished_at=timezone.now()
        )
        network.status = Network.Status.QUEUED
        network.progress = 0
        network.stage = "queued for rerun"
        network.reason = ""
        network.info = {}
        network.flags = []
        network.level = network.score = network.deciding_rung = None
        network.robust_accuracy = network.robust_low = network.robust_high = None
        network.audit_curve, network.flag_notes = [], {}
        network.save()
        pipeline_enqueue(network)
    return network


def benchmark_rerun_all(*, benchmark: Benchmark) -> int:
    networks = list(Network.objects.filter(benchmark=benchmark).exclude(archive=""))
    for network in networks:
        network_rerun(network=network)
    return len(networks)


def ranking_recompute(*, benchmark: Benchmark) -> None:
    from evaluator.tasks import enqueue_on_commit, rank_benchmark

    enqueue_on_commit(rank_benchmark, benchmark.pk)


def job_cancel(*, job: Job) -> Job:
    """Cancel a queued or running job; a running one's child is killed at its next
    progress report (evaluator.services.jobs), within about a second."""
    if job.state in (Job.State.QUEUED, Job.State.RUNNING):
        job.state = Job.State.CANCELLED
        job.finished_at = timezone.now()
        job.append_log("cancelled by an administrator")
        job.save()
        if job.network_id:
            Network.objects.filter(pk=job.network_id).exclude(
                status__in=[Network.Status.RANKED, Network.Status.REJECTED]
            ).update(status=Network.Status.FAILED, reason="cancelled by an administrator")
    return job


def token_create(*, user: AbstractBaseUser, label: str = "") -> ApiToken:
    return ApiToken.objects.create(user=user, key=ApiToken.generate_key(), label=label[:100])


def token_revoke(*, token: ApiToken) -> ApiToken:
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    return token
