"""Turning what an engine job wrote into rows: evaluations, adversarial sets, summaries.

Each store is idempotent (unique constraints; a duplicate loses quietly), so a phase
stored while its job still runs, or by a redelivered task, is never stored twice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from django.db import IntegrityError, transaction

from evaluator.engine import metrics
from evaluator.models import AdversarialDataset, Evaluation
from evaluator.services import storage
from leaderboard.models import Network

# Flags stored on Network.flags (SPEC §2).
FLAG_GRADIENT_MASKING = "gradient-masking"
FLAG_NONDETERMINISTIC = "non-deterministic"
FLAG_PROBABILITIES = "probabilities"
FLAG_LOW_ACCURACY = "low-accuracy"
VANISHED_THRESHOLD = 0.5
SUMMARY_FIELDS = [
    f"{prefix}_{part}"
    for prefix in ("clean", "universal", "whitebox")
    for part in ("accuracy", "low", "high")
] + ["attack_success"]


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
    network.info = {**value["info"], "model_dir": storage.relative(value["model_dir"])}
    network.save(update_fields=["info", "updated_at"])
    for kind in preds:
        evaluation_save(network=network, kind=kind, predictions=preds[kind], labels=labels, num_classes=bench.num_classes)
    summary_refresh(network)


def summary_refresh(network: Network) -> None:
    """Copy the headline numbers and flags onto the network row (leaderboard speed)."""
    evals = {e.kind: e for e in network.evaluations.filter(source__isnull=True)}
    for kind, prefix in ((Evaluation.Kind.CLEAN, "clean"), (Evaluation.Kind.UNIVERSAL, "universal")):
        e = evals.get(kind)
        if e is not None:
            setattr(network, f"{prefix}_accuracy", e.accuracy)
            setattr(network, f"{prefix}_low", e.low)
            setattr(network, f"{prefix}_high", e.high)
    adv = AdversarialDataset.objects.filter(network=network).first()
    flags: list[str] = []
    info = network.info or {}
    if adv is not None:
        acc = metrics.accuracy_from_correct(
            adv.prediction_array() == storage.eval_labels(network.benchmark.data_file)
        )
        network.whitebox_accuracy, network.whitebox_low, network.whitebox_high = acc.value, acc.low, acc.high
        network.attack_success = adv.success_rate
        if adv.vanished_fraction > VANISHED_THRESHOLD:
            flags.append(FLAG_GRADIENT_MASKING)
    if info and not info.get("deterministic", True):
        flags.append(FLAG_NONDETERMINISTIC)
    if info.get("outputs_probabilities"):
        flags.append(FLAG_PROBABILITIES)
    if network.clean_accuracy is not None and network.clean_accuracy < 2.0 / network.benchmark.num_classes:
        flags.append(FLAG_LOW_ACCURACY)
    network.flags = flags
    # Only these fields: a phase stored while the job still runs must not write back
    # the status and progress bar this in-memory row had when it was read.
    network.save(update_fields=[*SUMMARY_FIELDS, "flags", "updated_at"])


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


def cross_store(network: Network, peers: list[Network], value: dict, predictions: Path) -> None:
    bench = network.benchmark
    labels = storage.eval_labels(bench.data_file)
    by_id = {p.pk: p for p in peers}
    with np.load(predictions) as data:
        for key in data.files:
            direction, pid = key.split("_")
            peer = by_id[int(pid)]
            seconds = float(value["seconds"].get(key, 0.0))
            if direction == "row":
                evaluation_save(network=network, kind=Evaluation.Kind.ADVERSARIAL, source=peer,
                                 predictions=data[key], labels=labels, num_classes=bench.num_classes, seconds=seconds)
            else:
                evaluation_save(network=peer, kind=Evaluation.Kind.ADVERSARIAL, source=network,
                                 predictions=data[key], labels=labels, num_classes=bench.num_classes, seconds=seconds)
    predictions.unlink(missing_ok=True)
