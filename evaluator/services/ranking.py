"""Recomputing the ladder, every level and every score from stored evaluations.

The numbers come from engine.ladder (pure functions: the revised pairwise rule, ladder,
levels, scores); this module only gathers per-image correctness from rows and writes
the answer back, all in one transaction so a reader never sees half a ranking.
Reference scores are fitted once per set of references and kept on the Benchmark, so
uploads are placed against fixed scores and never move anyone else's (issue 16).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from django.db import transaction
from django.utils import timezone

from evaluator.engine import ladder as ladder_engine
from evaluator.models import AdversarialDataset, Evaluation
from evaluator.services import lifecycle, results, storage
from leaderboard.models import Benchmark, Network

S = Network.Status


@dataclass
class MatrixData:
    """The cross-attack matrix of the complete networks of a benchmark.

    correct[(i, j)]: network i right on each image of adv(j), diagonal (i, i) included
    (white-box, from the network's own AdversarialDataset); empty without labels.
    """

    networks: list[Network]
    M: np.ndarray
    correct: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def index(self, network_id: int) -> int | None:
        for i, n in enumerate(self.networks):
            if n.pk == network_id:
                return i
        return None


def complete_subset(ids: list[int], pairs: set[tuple[int, int]], references: set[int],
                    set_order: Mapping[int, int] | None = None) -> list[int]:
    """The networks that can be ranked: drop those with missing cells, worst first.

    Every cell (a, b), a on adv(b), is needed, except an upload on a *newer* upload's
    set (set_order: the order their adversarial sets were made; default the ids). That
    cell changes only the older upload's robust accuracy, never a level (levels are
    against the references), and it is computed after the newer one's ranking
    (pipeline.network_meet_peers); until then the matrix shows it as missing. The
    newer upload's own row, and every cell with a reference, are needed: they are its
    robust accuracy and its level.
    """
    order = set_order if set_order is not None else {i: i for i in ids}

    def needed(a: int, b: int) -> bool:
        return a in references or b in references or order[b] < order[a]

    keep = list(ids)
    while True:
        missing = {
            i: sum(((i, j) not in pairs and needed(i, j)) + ((j, i) not in pairs and needed(j, i))
                   for j in keep if j != i)
            for i in keep
        }
        worst = max(keep, key=lambda i: (missing[i], i), default=None)
        if worst is None or missing[worst] == 0:
            return keep
        keep.remove(worst)


def matrix_gather(*, benchmark: Benchmark, include_private: bool = True) -> MatrixData:
    """M[a][b] = accuracy of a on adv(b), over every network that can be ranked
    (complete_subset); NaN where an upload has not yet met another upload's set."""
    qs = (
        Network.objects.filter(benchmark=benchmark, adversarial__isnull=False)
        .exclude(status__in=[S.REJECTED, S.FAILED])
        # A peer that failed on a newer network's set waits for its re-validation
        # outside the matrix, so the newer network is ranked without that cell.
        .exclude(peer_failures__resolved=False)
        .select_related("adversarial")
        .order_by("pk")
    )
    if not include_private:
        qs = qs.filter(is_public=True)
    candidates = {n.pk: n for n in qs}
    evals = Evaluation.objects.filter(
        kind=Evaluation.Kind.ADVERSARIAL,
        network_id__in=candidates,
        source_id__in=candidates,
    ).values_list("network_id", "source_id", "accuracy", "predictions")
    labels = storage.eval_labels(benchmark.data_file) if benchmark.data_file else None
    acc: dict[tuple[int, int], float] = {}
    preds: dict[tuple[int, int], bytes] = {}
    for a, b, value, packed in evals:
        acc[(a, b)] = value
        preds[(a, b)] = bytes(packed)
    ids = complete_subset(sorted(candidates), set(acc), {pk for pk, n in candidates.items() if n.is_reference},
                          {pk: n.adversarial.pk for pk, n in candidates.items()})
    networks = [candidates[i] for i in ids]
    n = len(ids)
    M = np.full((n, n), np.nan)  # NaN: an upload not yet evaluated on another upload's set
    correct: dict[tuple[int, int], np.ndarray] = {}
    for i, a in enumerate(ids):
        adv: AdversarialDataset = candidates[a].adversarial
        M[i, i] = adv.whitebox_correct / adv.total if adv.total else 0.0
        if labels is not None:
            # The revised rule scores each network on its own white-box attack too.
            correct[(i, i)] = adv.prediction_array() == labels
        for j, b in enumerate(ids):
            if i != j and (a, b) in acc:
                M[i, j] = acc[(a, b)]
                if labels is not None:
                    correct[(i, j)] = np.frombuffer(preds[(a, b)], dtype=np.uint8) == labels
    return MatrixData(networks=networks, M=M, correct=correct)


def own_halves_apply(data: MatrixData, halves: Mapping[int, np.ndarray]) -> None:
    """Score each network on its own half of every comparison by its worst case there
    (results.own_halves), not by its targeted attack alone: the diagonal of `correct`
    is what the revised rule reads as "right on its own adversarial images"."""
    for i, net in enumerate(data.networks):
        if net.pk in halves:
            data.correct[(i, i)] = halves[net.pk]


@dataclass(frozen=True)
class Ranking:
    ladder: list[int]  # network ids, R1 first
    levels: dict[int, int]
    deciding: dict[int, int | None]  # 1-based ladder position of the deciding comparison
    scores: dict[int, float]
    reference_scores: dict[int, float] = field(default_factory=dict)  # network id -> score
    reference_scores_refit: bool = False  # fitted now (the set of references changed)


def _robust_accuracies(data: MatrixData, refs: list[int]) -> list[float] | None:
    """Robust accuracy per network when every reference has one, else None (the ladder
    then breaks ties by mean transfer accuracy). Read with getattr: the field is added
    to Network separately, and the ladder must work on a database without it."""
    values = [getattr(n, "robust_accuracy", None) for n in data.networks]
    if not refs or any(values[i] is None for i in refs):
        return None
    return [float("nan") if v is None else float(v) for v in values]


def ranking_compute(data: MatrixData, *, reference_scores: Mapping[int | str, float] | None = None) -> Ranking:
    """Ladder, levels and scores of `data` under the revised rule (engine.ladder).

    reference_scores: the scores stored when the references were last ranked ({id: score},
    JSON keys may be strings); used unchanged when they cover exactly the current
    references, otherwise (empty, a reference added, removed or rebuilt under a new id)
    the references are fitted again among themselves.
    """
    ids = [n.pk for n in data.networks]
    refs = [i for i, n in enumerate(data.networks) if n.is_reference]
    wins = ladder_engine.pairwise_wins(data.correct, len(ids))
    order = ladder_engine.ladder_order(wins, among=refs, robust=_robust_accuracies(data, refs), M=data.M)
    results = ladder_engine.level_results(wins, order)
    stored = {int(k): float(v) for k, v in (reference_scores or {}).items()}
    refit = not stored or set(stored) != {ids[i] for i in refs}
    fixed = None if refit else {i: stored[ids[i]] for i in refs}
    scores = ladder_engine.robustness_scores(wins, refs, fixed=fixed)
    return Ranking(
        ladder=[ids[i] for i in order],
        levels={ids[x]: r.level for x, r in enumerate(results)},
        deciding={ids[x]: None if r.deciding is None else r.deciding + 1 for x, r in enumerate(results)},
        scores={pk: float(s) for pk, s in zip(ids, scores)},
        reference_scores={ids[i]: float(scores[i]) for i in refs},
        reference_scores_refit=refit,
    )


def benchmark_rank(*, benchmark: Benchmark) -> Ranking:
    """Recompute the ladder, levels and scores; mark finished networks ranked."""
    with transaction.atomic():
        # Serialise concurrent recomputations on the benchmark row.
        benchmark = Benchmark.objects.select_for_update().get(pk=benchmark.pk)
        data = matrix_gather(benchmark=benchmark)
        # Robust accuracy and flags first: every new network adds a set to everyone's
        # worst case, and the ladder breaks its ties by robust accuracy.
        labels = storage.eval_labels(benchmark.data_file) if benchmark.data_file else None
        results.networks_judge(data.networks, data.correct, labels, benchmark.num_classes)
        if labels is not None:
            own_halves_apply(data, results.own_halves(data.networks, labels))
        ranking = ranking_compute(data, reference_scores=benchmark.reference_scores)
        now = timezone.now()
        included = {n.pk for n in data.networks}
        for net in data.networks:
            fields = {
                "level": ranking.levels[net.pk],
                "score": ranking.scores[net.pk],
                "deciding_rung": ranking.deciding[net.pk],
                **{name: getattr(net, name) for name in results.JUDGED_FIELDS},
            }
            # Only a network whose pipeline reached the ranking stage becomes ranked;
            # one still in an earlier stage (or restarted meanwhile) keeps its status.
            lifecycle.network_mark_ranked(network_id=net.pk, fields=fields, was=net.status)
        Network.objects.filter(benchmark=benchmark).exclude(pk__in=included).update(
            level=None, score=None, deciding_rung=None
        )
        benchmark.ladder = ranking.ladder
        benchmark.ranked_at = now
        benchmark.reference_scores = {str(pk): score for pk, score in ranking.reference_scores.items()}
        benchmark.save(update_fields=["ladder", "ranked_at", "reference_scores"])
    return ranking
