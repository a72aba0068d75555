"""Writes of the leaderboard app: uploads, deletes, visibility, tokens, admin reruns."""

from __future__ import annotations

import hashlib
import shutil
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from evaluator.services import lifecycle, storage
from evaluator.services.lifecycle import DELETED_UPLOAD_MARK
from leaderboard import model_cards
from leaderboard.model_cards import ModelCard
from leaderboard.models import ApiToken, Benchmark, Network

# A local file header, or the end-of-central-directory record of an empty zip (which the
# engine then refuses with "no saved_model.pb", a clearer reason than "wrong bytes").
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
GZIP_MAGIC = b"\x1f\x8b"
# Accepted file name endings and the format each one announces.
EXTENSIONS = {".zip": "zip", ".tar.gz": "tar.gz", ".tgz": "tar.gz"}
NAME_MAX = 100
DESCRIPTION_MAX = 5000
CHUNK = 1024 * 1024


class UploadError(ValueError):
    """The upload request is unacceptable; the message is shown to the user."""


class DuplicateUpload(UploadError):
    """The same archive is already a live network of the benchmark: `existing`."""

    def __init__(self, existing: Network) -> None:
        from leaderboard.duplicates import duplicate_reason

        super().__init__(duplicate_reason(existing))
        self.existing = existing


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


def _copy_capped(source: BinaryIO, target: Path) -> tuple[int, str]:
    """Stream to disk, stopping at the size cap (never trust a declared size); the
    number of bytes and their sha256 (duplicate uploads, leaderboard.duplicates)."""
    limit = settings.MAX_UPLOAD_BYTES
    written = 0
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > limit:
                out.close()
                target.unlink(missing_ok=True)
                raise UploadError(f"the archive is larger than the {limit // (1024 * 1024)} MB limit")
            out.write(chunk)
            digest.update(chunk)
    return written, digest.hexdigest()


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
    card: ModelCard | None = None,
    allow_duplicate: bool = False,
) -> Network:
    """Store an uploaded archive under a server-generated name and queue the pipeline.

    enqueue=False leaves the pipeline to the caller (the `rank` command runs it
    in-process). filename: the client's name for the file (web uploads), checked for
    an accepted extension; never used to name anything on disk. card: the model card
    (leaderboard.model_cards, already checked). Raises DuplicateUpload when the same
    bytes are already a live network the owner may see, unless allow_duplicate.
    """
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
        network = Network(
            benchmark=benchmark, owner=owner, name=name, description=description,
            is_public=is_public, stage="queued", allow_duplicate=allow_duplicate,
        )
        model_cards.card_apply(network, card or model_cards.ModelCard())
        network.save()
        target = storage.network_dir(network.pk) / f"upload.{suffix}"
        network.archive_bytes, network.archive_sha256 = _copy_capped(archive, target)
        if not allow_duplicate:
            _duplicate_check(network, owner)
        network.archive = storage.relative(target)
        network.save(update_fields=["archive", "archive_bytes", "archive_sha256"])
        if enqueue:
            lifecycle.pipeline_enqueue(network)
    return network


def _duplicate_check(network: Network, owner: AbstractBaseUser | None) -> None:
    """Raise DuplicateUpload (which rolls back the new row; its folder is removed here)."""
    from django.contrib.auth.models import AnonymousUser

    from leaderboard.duplicates import network_find_duplicate

    existing = network_find_duplicate(benchmark=network.benchmark, archive_sha256=network.archive_sha256,
                                      user=owner or AnonymousUser(), exclude_pk=network.pk)
    if existing is not None:
        shutil.rmtree(storage.media_path(f"networks/{network.pk}"), ignore_errors=True)
        raise DuplicateUpload(existing)


def network_register_path(
    *,
    benchmark: Benchmark,
    path: Path,
    name: str,
    owner: AbstractBaseUser | None = None,
    enqueue: bool = True,
    allow_duplicate: bool = True,
) -> Network:
    """The `rank` command: a SavedModel folder is zipped, an archive is taken as is.

    An operator tool that re-ranks a folder on purpose (determinism checks, the
    benches), so duplicates are allowed unless asked otherwise."""
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
                benchmark=benchmark, owner=owner, name=name, archive=tmp, enqueue=enqueue,
                allow_duplicate=allow_duplicate,
            )
    if not path.is_file():
        raise UploadError(f"{path} is neither a SavedModel folder nor an archive")
    with open(path, "rb") as fh:
        return network_upload(
            benchmark=benchmark, owner=owner, name=name, archive=fh, enqueue=enqueue,
            allow_duplicate=allow_duplicate,
        )


def network_set_public(*, network: Network, is_public: bool) -> Network:
    network.is_public = is_public
    network.save(update_fields=["is_public", "updated_at"])
    return network


def token_create(*, user: AbstractBaseUser, label: str = "") -> ApiToken:
    return ApiToken.objects.create(user=user, key=ApiToken.generate_key(), label=label[:100])


def token_revoke(*, token: ApiToken) -> ApiToken:
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    return token
