"""Turning what an engine job wrote into rows: evaluations, adversarial sets, summaries.

Each store is idempotent (unique constraints; a duplicate loses quietly), so a phase
stored while its job still runs, or by a redelivered task, is never stored twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import Count

from evaluator.engine import flags, metrics
from evaluator.engine.flags import FAILED_LATER as FLAG_FAILED_LATER  # noqa: F401  (one definition: engine.flags)
from evaluator.engine.flags import GRADIENT_MASKING as FLAG_GRADIENT_MASKING  # noqa: F401
from evaluator.engine.flags import LOW_ACCURACY as FLAG_LOW_ACCURACY  # noqa: F401
from evaluator.engine.flags import MEMORISATION as FLAG_MEMORISATION  # noqa: F401
from evaluator.engine.flags import NONDETERMINISTIC as FLAG_NONDETERMINISTIC  # noqa: F401
from evaluator.engine.flags import PROBABILITIES as FLAG_PROBABILITIES  # noqa: F401
from evaluator.models import AdversarialDataset, AuditResult, Evaluation, PeerFailure
from evaluator.services import storage
from leaderboard.models import Network

# What robust accuracy and the flags write (benchmark_rank writes these for every network).
JUDGED_FIELDS = ["robust_accuracy", "robust_low", "robust_high", "audit_curve", "flags", "flag_notes"]
SUMMARY_FIELDS = [
    f"{prefix}_{part}"
    for prefix in ("clean", "universal", "universal_own", "whitebox")
    for part in ("accuracy", "low", "high")
] + ["attack_success"]
# Plain (source-less) evaluations: (predictions, their accuracy) by kind.
Plain = dict[str, tuple[np.ndarray, metrics.Accuracy]]


def evaluation_save(
    *, network: Network, kind: str, predictions: np.ndarray, labels: np.ndarray,
    num_classes: int, source: Network | None = None, seconds: float = 0.0,
) -> Evaluation | None:
    """Store one evaluation; a concurrent duplicate loses quietly (unique per pair)."""
    acc = metrics.accuracy(predictions, labels)
    try:
        with transaction.atomic():
            return Evaluation.objects.create(
                network=network, kind=kind, source=source,
                correct=acc.correct, total=acc.total, accuracy=acc.value,
                low=acc.low, high=acc.high,
                confusion=metrics.confusion_matrix(labels, predictions, num_classes).tolist(),
                predictions=storage.pack_predictions(predictions), seconds=seconds,
            )
    except IntegrityError:
        return None


def validation_store(network: Network, value: dict, predictions: Path) -> None:
    """The model's description and its clean (+ universal) evaluations."""
    bench = network.benchmark
    labels = storage.eval_labels(bench.data_file)
    with np.load(predictions) as data:
        preds = {k: data[k] for k in data.files}
    predictions.unlink(missing_ok=True)
    network.refresh_from_db()
    # model_dir was set when the archive was accepted; the child only describes the model.
    network.info = {**value["info"], "model_dir": network.info["model_dir"],
                    "eval_seconds": float(value.get("eval_seconds", 0.0)),
                    # The full determinism and the noise checks (engine.jobs._checks).
                    "checks": value.get("checks") or {}}
    network.save(update_fields=["info", "updated_at"])
    for kind in preds:
        evaluation_save(network=network, kind=kind, predictions=preds[kind], labels=labels, num_classes=bench.num_classes)
    summary_refresh(network)


def summary_refresh(network: Network) -> None:
    """Copy the headline numbers, robust accuracy and flags onto the network row
    (leaderboard speed). benchmark_rank recomputes the last two for every network, since
    each new network adds a set to everyone's worst case."""
    evals = {e.kind: e for e in network.evaluations.filter(source__isnull=True)}
    for kind, prefix in ((Evaluation.Kind.CLEAN, "clean"), (Evaluation.Kind.UNIVERSAL, "universal"),
                         (Evaluation.Kind.UNIVERSAL_OWN, "universal_own")):
        e = evals.get(kind)
        if e is not None:
            setattr(network, f"{prefix}_accuracy", e.accuracy)
            setattr(network, f"{prefix}_low", e.low)
            setattr(network, f"{prefix}_high", e.high)
    adv = AdversarialDataset.objects.filter(network=network).first()
    if adv is not None:
        acc = metrics.accuracy_from_counts(adv.whitebox_correct, adv.total)
        network.whitebox_accuracy, network.whitebox_low, network.whitebox_high = acc.value, acc.low, acc.high
        network.attack_success = adv.success_rate
    labels, evidence = _stored_evidence(network, adv=adv, evals=evals)
    network_judge(network, labels=labels, **evidence,
                  failures=PeerFailure.objects.filter(network=network).count(),
                  num_classes=network.benchmark.num_classes)
    # Only these fields: a phase stored while the job still runs must not write back
    # the status and progress bar this in-memory row had when it was read.
    network.save(update_fields=[*SUMMARY_FIELDS, *JUDGED_FIELDS, "updated_at"])


def _stored_evidence(network: Network, *, adv: AdversarialDataset | None, evals: dict[str, Evaluation]
                     ) -> tuple[np.ndarray | None, dict]:
    """(eval labels, robust_sets' keyword arguments) from what is stored for `network`."""
    labels = storage.eval_labels(network.benchmark.data_file) if network.benchmark.data_file else None
    peers = (
        Evaluation.objects.filter(network=network, kind=Evaluation.Kind.ADVERSARIAL, source__isnull=False)
        .exclude(source__status__in=[Network.Status.REJECTED, Network.Status.FAILED])
        .values_list("source__name", "predictions")
    )
    return labels, {
        "adv": adv, "audit": AuditResult.objects.filter(network=network).first(),
        "plain": {e.kind: (e.prediction_array(), metrics.accuracy_from_counts(e.correct, e.total))
                  for e in evals.values()},
        "peers": [] if labels is None else [(name, np.frombuffer(bytes(p), np.uint8) == labels) for name, p in peers],
    }


def network_robust_correct(network: Network) -> np.ndarray | None:
    """Per eval image: is `network` right under every stored attack (the vector robust
    accuracy counts); None until both of its own attacks are stored."""
    evals = {e.kind: e for e in network.evaluations.filter(source__isnull=True)}
    labels, evidence = _stored_evidence(network, adv=AdversarialDataset.objects.filter(network=network).first(),
                                        evals=evals)
    sets = robust_sets(labels, **evidence) if labels is not None else None
    return metrics.robust_correct(sets) if sets else None


def robust_sets(
    labels: np.ndarray, *, adv: AdversarialDataset | None, audit: AuditResult | None, plain: Plain,
    peers: Sequence[tuple[str, np.ndarray]],
) -> list[np.ndarray] | None:
    """The per-image correctness vectors robust accuracy is the worst case of (SPEC §2):
    its own targeted attack, the untargeted audit, every other network's adversarial set,
    the universal set, the universal perturbations fitted on it, and the clean images (the unperturbed image is inside every ε-ball).
    None until both of its own attacks are stored: without them it is no worst case."""
    if adv is None or audit is None:
        return None
    sets = [adv.prediction_array() == labels, audit.prediction_array() == labels]
    sets += [plain[kind][0] == labels for kind in (Evaluation.Kind.CLEAN, Evaluation.Kind.UNIVERSAL,
                                                   Evaluation.Kind.UNIVERSAL_OWN) if kind in plain]
    sets += [correct for _name, correct in peers]
    return sets


def network_judge(
    network: Network, *, labels: np.ndarray | None, adv: AdversarialDataset | None, audit: AuditResult | None,
    plain: Plain, peers: Sequence[tuple[str, np.ndarray]], failures: int, num_classes: int,
) -> None:
    """Set robust accuracy, the audit curve, the flags and their notes on the row in
    memory (the caller saves): the one place both summary_refresh and benchmark_rank
    turn stored evidence into them."""
    sets = robust_sets(labels, adv=adv, audit=audit, plain=plain, peers=peers) if labels is not None else None
    robust = metrics.robust_accuracy(sets) if sets else None
    network.robust_accuracy = robust.value if robust else None
    network.robust_low = robust.low if robust else None
    network.robust_high = robust.high if robust else None
    network.audit_curve = list(audit.curve) if audit is not None else []
    info = network.info or {}
    checks = info.get("checks") or {}
    compared = checks.get("compared")
    whitebox = metrics.accuracy_from_counts(adv.whitebox_correct, adv.total) if adv is not None else None
    transfers = {}
    for name, correct in peers if whitebox is not None else ():
        right = int(np.count_nonzero(correct))
        # Only a set it does worse on than on its own attack can flag it; skipping the
        # rest keeps a ranking's N^2 of these cheap.
        if right < whitebox.value * len(correct):
            transfers[name] = metrics.accuracy_from_counts(right, len(correct))
    evidence = flags.Evidence(
        num_classes=num_classes,
        clean=plain[Evaluation.Kind.CLEAN][1] if Evaluation.Kind.CLEAN in plain else None,
        whitebox=whitebox,
        vanished_fraction=adv.vanished_fraction if adv is not None else 0.0,
        audit=metrics.accuracy_from_counts(audit.correct, audit.total) if audit is not None else None,
        transfers=transfers,
        probe_deterministic=bool(checks.get("probe_deterministic", info.get("deterministic", True))),
        disagreements=checks.get("disagreements"),
        compared=compared,
        noise_clean=metrics.accuracy_from_counts(checks["noise_clean_correct"], compared) if compared else None,
        noise_noisy=metrics.accuracy_from_counts(checks["noise_noisy_correct"], compared) if compared else None,
        outputs_probabilities=bool(info.get("outputs_probabilities")),
        failures=failures,
    )
    found = flags.decide(evidence)
    network.flags = [f.name for f in found]
    network.flag_notes = {f.name: f.note for f in found}


def _own_evidence(ids: list[int]) -> tuple[dict[int, Plain], dict[int, AuditResult]]:
    """Every network's plain evaluations and audit, in two queries."""
    plain: dict[int, Plain] = {pk: {} for pk in ids}
    for pk, kind, packed, right, total in Evaluation.objects.filter(
        network_id__in=ids, source__isnull=True
    ).values_list("network_id", "kind", "predictions", "correct", "total"):
        plain[pk][kind] = (np.frombuffer(bytes(packed), np.uint8), metrics.accuracy_from_counts(right, total))
    return plain, AuditResult.objects.in_bulk(ids, field_name="network_id") if ids else {}


def networks_judge(networks: Sequence[Network], correct: dict[tuple[int, int], np.ndarray],
                   labels: np.ndarray | None, num_classes: int) -> None:
    """network_judge for every network of a ranking in a fixed number of queries.

    correct[(i, j)]: network i right on each image of adv(j) (ranking.MatrixData, the
    diagonal its own attack), so the transfer sets are exactly the matrix's cells.
    """
    ids = [n.pk for n in networks]
    plain, audits = _own_evidence(ids)
    failures = dict(
        PeerFailure.objects.filter(network_id__in=ids).values("network_id").annotate(n=Count("pk"))
        .values_list("network_id", "n")
    )
    for i, net in enumerate(networks):
        peers = [(other.name, correct[(i, j)]) for j, other in enumerate(networks) if j != i and (i, j) in correct]
        network_judge(net, labels=labels, adv=getattr(net, "adversarial", None), audit=audits.get(net.pk),
                      plain=plain[net.pk], peers=peers, failures=failures.get(net.pk, 0), num_classes=num_classes)


def own_halves(networks: Sequence[Network], labels: np.ndarray) -> dict[int, np.ndarray]:
    """{network id: its outcome on its own half of every pairwise comparison} (SPEC §2,
    the revised rule; docs/METHODOLOGY.md). Per image of its own adversarial set: right
    under its own targeted attack *and* every other attack fixed when it was evaluated:
    the audit, the universal sets, the clean image and every reference's adversarial
    image of that eval image. Its worst case without the uploads' sets, so it never
    moves as uploads arrive; and a network whose gradients mislead its own attack (a
    decoy, a lookup table) is still judged on its half by the attacks that do reach it,
    instead of winning every comparison there. Before its audit is stored: its targeted
    attack alone. Four queries whatever the number of networks."""
    ids = [n.pk for n in networks]
    plain, audits = _own_evidence(ids)
    references: dict[int, list[tuple[str, np.ndarray]]] = {pk: [] for pk in ids}
    for pk, name, packed in (
        Evaluation.objects.filter(network_id__in=ids, kind=Evaluation.Kind.ADVERSARIAL, source__is_reference=True)
        .exclude(source__status__in=[Network.Status.REJECTED, Network.Status.FAILED])
        .values_list("network_id", "source__name", "predictions")
    ):
        references[pk].append((name, np.frombuffer(bytes(packed), np.uint8) == labels))
    out = {}
    for net in networks:
        adv = getattr(net, "adversarial", None)
        if adv is None:
            continue
        sets = robust_sets(labels, adv=adv, audit=audits.get(net.pk), plain=plain[net.pk], peers=references[net.pk])
        out[net.pk] = metrics.robust_correct(sets) if sets else adv.prediction_array() == labels
    return out


def audit_store(network: Network, value: dict, predictions: Path, own_universal: Path | None = None) -> None:
    """The untargeted audit (engine.audit): per-image predictions and the ε curve; and the
    universal perturbations fitted on the network (stored like its adversarial set, the
    predictions as an evaluation of kind universal-own)."""
    labels = storage.eval_labels(network.benchmark.data_file)
    if own_universal is not None and own_universal.exists() and "universal_own" in value:
        with np.load(own_universal) as data:
            own_preds = data["predictions"].astype(np.int64)
            np.savez_compressed(storage.network_dir(network.pk) / "universal-own.npz",
                                perturbations=data["perturbations"])
        evaluation_save(network=network, kind=Evaluation.Kind.UNIVERSAL_OWN, predictions=own_preds, labels=labels,
                        num_classes=network.benchmark.num_classes, seconds=float(value["universal_own"]["seconds"]))
        own_universal.unlink(missing_ok=True)
    with np.load(predictions) as data:
        preds = data["predictions"].astype(np.int64)
    acc = metrics.accuracy(preds, labels)
    curve = []
    for point in value["curve"]:
        at = metrics.accuracy_from_counts(point["correct"], point["total"])
        curve.append({**point, "epsilon": round(float(point["epsilon"]), 6), "accuracy": at.value,
                      "low": at.low, "high": at.high})
    try:
        with transaction.atomic():
            AuditResult.objects.create(
                network=network, epsilon=value["epsilon"], steps=value["steps"], restarts=value["restarts"],
                eot_samples=value.get("eot_samples", 1), correct=acc.correct, total=acc.total,
                accuracy=acc.value, low=acc.low, high=acc.high, curve=curve,
                predictions=storage.pack_predictions(preds), seconds=float(value.get("seconds", 0.0)),
            )
    except IntegrityError:
        pass  # a redelivered task finished first: the stored audit stands
    predictions.unlink(missing_ok=True)
    network.refresh_from_db()
    summary_refresh(network)


def attack_store(network: Network, value: dict, adversarial: Path) -> None:
    bench = network.benchmark
    predictions = np.asarray(value["predictions"])
    labels = storage.eval_labels(bench.data_file)
    try:
        with transaction.atomic():
            AdversarialDataset.objects.create(
                network=network, file=storage.relative(adversarial),
                epsilon=bench.epsilon, step=bench.step, steps=bench.steps,
                success_rate=value["success_rate"],
                whitebox_correct=int((predictions == labels).sum()), total=len(labels),
                vanished_fraction=value["vanished_fraction"], seconds=value["seconds"],
                predictions=storage.pack_predictions(predictions),
            )
    except IntegrityError:
        pass  # a redelivered task finished first: the stored set stands
    network.refresh_from_db()
    summary_refresh(network)


def rows_store(network: Network, peers: dict[int, Network], value: dict, predictions: Path) -> None:
    """The network's row of the matrix: its predictions on each peer's adversarial set."""
    bench = network.benchmark
    labels = storage.eval_labels(bench.data_file)
    with np.load(predictions) as data:
        for key in data.files:
            _row, pid = key.split("_")
            evaluation_save(network=network, kind=Evaluation.Kind.ADVERSARIAL, source=peers[int(pid)],
                            predictions=data[key], labels=labels, num_classes=bench.num_classes,
                            seconds=float(value["seconds"].get(key, 0.0)))
    predictions.unlink(missing_ok=True)
