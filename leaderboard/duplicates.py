"""Duplicate uploads: the same model uploaded again is answered with a link to the
network already on the board, instead of another identical row (issue 14).

Two checks, both within one benchmark and against live uploads only (not rejected or
failed, which a fresh upload may legitimately retry; not references, whose uploaded copy
is ranked to show the level scale):

- at upload, the sha256 of the archive's bytes (leaderboard.services.network_upload);
- at acceptance in the worker, the sha256 manifest of the unpacked model files
  (Network.model_files), which catches the same folder zipped again, in another format
  or under another folder name: `network_duplicate_of` is what the pipeline calls.

Only networks the uploader may see are matched: a private network of someone else
stays invisible (answering "duplicate of #12" would reveal it and what it contains).
"""

from __future__ import annotations

from collections.abc import Mapping

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.urls import reverse

from leaderboard import selectors
from leaderboard.models import Benchmark, Network

S = Network.Status
DEAD = (S.REJECTED, S.FAILED)


def network_find_duplicate(
    *,
    benchmark: Benchmark,
    manifest: Mapping[str, str] | None = None,
    archive_sha256: str | None = None,
    user: AbstractBaseUser | AnonymousUser | None = None,
    exclude_pk: int | None = None,
) -> Network | None:
    """The oldest live network of `benchmark` with the same archive bytes or the same
    model files, among those `user` may see (every network when user is None)."""
    if not manifest and not archive_sha256:
        return None
    qs = (selectors.visible_networks(user=user, benchmark=benchmark) if user is not None
          else Network.objects.filter(benchmark=benchmark))
    # References are not matched: an uploaded copy of a reference is how a researcher
    # checks the level scale (it ties with its rung, SPEC §2), so it is ranked.
    qs = qs.exclude(status__in=DEAD).exclude(allow_duplicate=True).exclude(is_reference=True).order_by("created_at", "pk")
    if exclude_pk is not None:
        qs = qs.exclude(pk=exclude_pk)
    if archive_sha256:
        found = qs.filter(archive_sha256=archive_sha256).select_related("owner").first()
        if found is not None:
            return found
    if manifest:
        wanted = dict(manifest)
        # Compared in Python: JSON equality in SQL differs between SQLite and PostgreSQL,
        # and a benchmark's manifests are a few paths each.
        for pk, files in qs.exclude(model_files={}).values_list("pk", "model_files"):
            if files == wanted:
                return Network.objects.select_related("owner").get(pk=pk)
    return None


def network_duplicate_of(*, network: Network) -> Network | None:
    """For the worker, once network.model_files is stored (pipeline.network_accept): the
    live network with the same model files that its owner may see, if any. A reference,
    or a network registered on purpose again (allow_duplicate), has none."""
    if network.is_reference or network.allow_duplicate or not network.model_files:
        return None
    user = network.owner if network.owner_id else AnonymousUser()
    return network_find_duplicate(benchmark=network.benchmark, manifest=network.model_files,
                                  user=user, exclude_pk=network.pk)


def duplicate_reason(existing: Network) -> str:
    """The sentence shown for a duplicate (the rejection reason of a worker-side match)."""
    return (f"the same model is already on the leaderboard as “{existing.name}” (network {existing.pk}, "
            f"{reverse('network', args=[existing.pk])}); see its results there instead of ranking it twice")
