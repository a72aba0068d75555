"""Ranking recomputed from stored rows: per-image gathering (white-box diagonal included),
the revised rule's ladder and levels, reference scores fixed on the Benchmark."""

from __future__ import annotations

import numpy as np
import pytest

from evaluator.engine import ladder as ladder_engine
from evaluator.models import AdversarialDataset, Evaluation
from evaluator.services import storage
from evaluator.services.ranking import benchmark_rank, complete_subset, matrix_gather
from leaderboard.models import Benchmark, Network
from tests.fakes import _evaluation, fake_network, fake_suite

pytestmark = pytest.mark.django_db


def _preds(labels: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Predictions right exactly where `right` is true (wrong: the next class)."""
    return np.where(right, labels, (labels + 1) % 10).astype(np.uint8)


def stored_network(suite, name: str, own: np.ndarray, on_theirs: dict[int, np.ndarray],
                   theirs_on_ours: dict[int, np.ndarray]) -> Network:
    """An upload written row by row: its white-box predictions `own`, its predictions on
    adv(r) and r's on its set, for every reference id r (the pipeline's rows)."""
    bench, labels = suite.benchmark, suite.labels
    net = Network.objects.create(benchmark=bench, name=name, status=Network.Status.CROSS_EVALUATING)
    _evaluation(net, Evaluation.Kind.CLEAN, labels.astype(np.uint8), labels)
    file = storage.network_dir(net.pk) / "adversarial.npz"
    np.savez(file, adversarial=np.zeros((len(labels), 8, 8, 1), np.float32))
    AdversarialDataset.objects.create(
        network=net, file=storage.relative(file), epsilon=0.3, step=0.01, steps=40, success_rate=0.5,
        whitebox_correct=int((own == labels).sum()), total=len(labels), vanished_fraction=0.0,
        seconds=1.0, predictions=storage.pack_predictions(own),
    )
    refs = {r.pk: r for r in suite.references}
    for rid, preds in on_theirs.items():
        _evaluation(net, Evaluation.Kind.ADVERSARIAL, preds, labels, source=refs[rid])
    for rid, preds in theirs_on_ours.items():
        _evaluation(refs[rid], Evaluation.Kind.ADVERSARIAL, preds, labels, source=net)
    return net


def copy_of(suite, ref: Network) -> Network:
    """An exact copy of a reference: same predictions everywhere; its adversarial set is
    the reference's (a white-box attack on the same function)."""
    own = ref.adversarial.prediction_array()
    on_theirs, theirs_on_ours = {}, {}
    for r in suite.references:
        if r.pk == ref.pk:
            on_theirs[r.pk] = theirs_on_ours[r.pk] = own
        else:
            on_theirs[r.pk] = Evaluation.objects.get(network=ref, source=r).prediction_array()
            theirs_on_ours[r.pk] = Evaluation.objects.get(network=r, source=ref).prediction_array()
    return stored_network(suite, f"copy of {ref.name}", own, on_theirs, theirs_on_ours)


def revised_counts(net: Network, ref: Network, labels: np.ndarray) -> tuple[int, int]:
    """Independent of the engine: (net right, ref right) on adv(net) + adv(ref), from rows."""
    ours = (net.adversarial.prediction_array() == labels).sum() + (
        Evaluation.objects.get(network=net, source=ref).prediction_array() == labels).sum()
    theirs = (ref.adversarial.prediction_array() == labels).sum() + (
        Evaluation.objects.get(network=ref, source=net).prediction_array() == labels).sum()
    return int(ours), int(theirs)


def test_matrix_and_per_image_correctness_match_stored_rows() -> None:
    suite = fake_suite(references=4)
    data = matrix_gather(benchmark=suite.benchmark)
    assert [n.pk for n in data.networks] == sorted(n.pk for n in suite.references)
    for i, a in enumerate(data.networks):
        for j, b in enumerate(data.networks):
            if i == j:
                expected = a.adversarial.whitebox_correct / a.adversarial.total
                preds = a.adversarial.prediction_array()
            else:
                row = Evaluation.objects.get(network=a, source=b)
                expected, preds = row.accuracy, row.prediction_array()
            assert data.M[i, j] == pytest.approx(expected)
            np.testing.assert_array_equal(data.correct[(i, j)], preds == suite.labels)


def test_reference_levels_start_at_zero_and_scores_follow_strength() -> None:
    suite = fake_suite(references=4, uploads=0)
    bench = suite.benchmark
    assert bench.ladder == [n.pk for n in suite.references]  # made with increasing strength
    refs = [Network.objects.get(pk=pk) for pk in bench.ladder]
    # One scale: R_k beats R1..R_{k-1}, then its own rung stops it.
    assert [n.level for n in refs] == [0, 1, 2, 3]
    assert [n.deciding_rung for n in refs] == [1, 2, 3, 4]
    scores = [n.score for n in refs]
    assert scores == sorted(scores)
    assert bench.reference_scores == {str(n.pk): n.score for n in refs}
    assert all(n.status == Network.Status.RANKED for n in refs)


def test_upload_level_from_the_revised_counts() -> None:
    suite = fake_suite(references=4)
    upload = fake_network(suite.benchmark, suite.labels, name="mid", strength=0.5, peers=suite.references, seed=7)
    benchmark_rank(benchmark=suite.benchmark)
    upload.refresh_from_db()
    wins = []
    for ref in suite.references:  # ladder order
        ours, theirs = revised_counts(upload, ref, suite.labels)
        wins.append(ours > theirs)
    assert upload.level == ladder_engine.level(wins)
    assert upload.deciding_rung == min(upload.level + 1, 4)
    assert upload.status == Network.Status.RANKED


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_exact_copy_of_a_reference_gets_its_level(k: int) -> None:
    suite = fake_suite(references=4)
    ref = Network.objects.get(pk=suite.benchmark.ladder[k])
    copy = copy_of(suite, ref)
    benchmark_rank(benchmark=suite.benchmark)
    copy.refresh_from_db()
    ref.refresh_from_db()
    assert copy.level == ref.level == k
    assert copy.deciding_rung == ref.deciding_rung == k + 1  # the tie with R_k stops both


def test_undefended_upload_is_ranked_by_the_revised_rule() -> None:
    """White-box 2%, its attack fools every reference on every image, 10% on their
    attacks (the references: white-box 20-60%): the charter's rule puts it above every
    reference, the revised rule at 0."""
    suite = fake_suite(references=3)
    labels, n = suite.labels, len(suite.labels)
    first = np.arange(n) < 0.1 * n
    u = stored_network(suite, "undefended", _preds(labels, np.arange(n) < 0.02 * n),
                       {r.pk: _preds(labels, first) for r in suite.references},
                       {r.pk: _preds(labels, np.zeros(n, bool)) for r in suite.references})
    benchmark_rank(benchmark=suite.benchmark)
    u.refresh_from_db()
    data = matrix_gather(benchmark=suite.benchmark)
    x = data.index(u.pk)
    ladder = suite.benchmark.ladder
    charter = [ladder_engine.charter_pairwise(data.correct, x, data.index(pk)).a_wins for pk in ladder]
    assert ladder_engine.level(charter) == 3
    assert u.level == 0 and u.deciding_rung == 1


def test_reference_scores_stay_fixed_as_uploads_arrive() -> None:
    suite = fake_suite(references=4)
    bench = suite.benchmark
    before = dict(bench.reference_scores)
    peers = list(suite.references)
    first_score = None
    for j in range(4):
        peers.append(fake_network(bench, suite.labels, name=f"up-{j}", strength=0.2 + 0.2 * j, peers=peers, seed=40 + j))
        ranking = benchmark_rank(benchmark=bench)
        assert not ranking.reference_scores_refit
        bench.refresh_from_db()
        assert bench.reference_scores == before
        assert {str(r.pk): Network.objects.get(pk=r.pk).score for r in suite.references} == before
        score = Network.objects.get(pk=peers[4].pk).score
        first_score = score if first_score is None else first_score
        assert score == first_score  # later uploads never move an earlier one


def test_reference_scores_are_refitted_when_the_references_change() -> None:
    suite = fake_suite(references=4)
    bench = suite.benchmark
    before = {int(k): v for k, v in bench.reference_scores.items()}
    suite.references[1].delete()  # e.g. rebuilt: the new reference has a new id
    ranking = benchmark_rank(benchmark=bench)
    bench.refresh_from_db()
    assert ranking.reference_scores_refit
    remaining = [r.pk for r in suite.references if r.pk != suite.references[1].pk]
    assert set(bench.reference_scores) == {str(pk) for pk in remaining}
    assert {int(k): v for k, v in bench.reference_scores.items()} != {pk: before[pk] for pk in remaining}
    # An emptied store is refitted too, to the same numbers.
    Benchmark.objects.filter(pk=bench.pk).update(reference_scores={})
    again = benchmark_rank(benchmark=bench)
    assert again.reference_scores_refit and again.reference_scores == ranking.reference_scores


def test_network_with_missing_pairs_is_left_out_until_complete() -> None:
    suite = fake_suite(references=3)
    late = fake_network(suite.benchmark, suite.labels, name="late", strength=0.9, peers=suite.references, seed=9)
    Evaluation.objects.filter(network=late, source=suite.references[0]).delete()
    benchmark_rank(benchmark=suite.benchmark)
    late.refresh_from_db()
    assert late.level is None
    assert late.status == Network.Status.CROSS_EVALUATING
    data = matrix_gather(benchmark=suite.benchmark)
    assert late.pk not in [n.pk for n in data.networks]
    assert np.isfinite(data.M).all()


def _all_pairs(ids: list[int]) -> set[tuple[int, int]]:
    return {(a, b) for a in ids for b in ids if a != b}


# Networks 1, 2 are references, 3, 4, 5 uploads (5 the newest).
@pytest.mark.parametrize(("absent", "kept"), [
    (set(), [1, 2, 3, 4, 5]),
    ({(3, 5), (4, 5)}, [1, 2, 3, 4, 5]),  # older uploads not yet on 5's set: 5 is ranked anyway
    ({(5, 3)}, [1, 2, 3, 4]),  # 5's own row is missing a set: its robust accuracy would be wrong
    ({(1, 5)}, [1, 2, 3, 4]),  # a reference not yet on 5's set: its level would be wrong
    ({(5, 1)}, [1, 2, 3, 4]),
    ({(1, 3)}, [1, 2, 4, 5]),  # a reference's row lacks an upload's set: that upload waits
    ({(3, 5), (5, 3)}, [1, 2, 3, 4]),  # neither of two uploads met the other: the newer waits
])
def test_what_a_ranking_needs_of_each_network(absent: set[tuple[int, int]], kept: list[int]) -> None:
    assert complete_subset([1, 2, 3, 4, 5], _all_pairs([1, 2, 3, 4, 5]) - absent, {1, 2}) == kept


def test_an_upload_is_ranked_before_the_older_uploads_meet_its_set() -> None:
    """Their cells on its set change only their robust accuracy; until they are stored
    the matrix says 'not yet' (NaN, null in the API) and every level stands."""
    suite = fake_suite(references=3, uploads=2)
    older = suite.uploads[0]
    before = {n.pk: n.level for n in Network.objects.filter(benchmark=suite.benchmark)}
    new = fake_network(suite.benchmark, suite.labels, name="new", strength=0.7, peers=suite.references + suite.uploads,
                       seed=11)
    Evaluation.objects.filter(network__in=suite.uploads, source=new).delete()
    benchmark_rank(benchmark=suite.benchmark)
    new.refresh_from_db()
    assert new.status == Network.Status.RANKED and new.level is not None
    assert {pk: level for pk, level in Network.objects.filter(pk__in=before).values_list("pk", "level")} == before
    data = matrix_gather(benchmark=suite.benchmark)
    i, j = data.index(older.pk), data.index(new.pk)
    assert np.isnan(data.M[i, j]) and (i, j) not in data.correct
    assert np.isfinite(np.delete(data.M.ravel(), [i * len(data.networks) + j for i in
                                                    (data.index(u.pk) for u in suite.uploads)])).all()


def test_deleted_network_leaves_matrix_and_ranking() -> None:
    suite = fake_suite(references=3, uploads=2)
    gone = suite.uploads[0]
    gone.delete()
    benchmark_rank(benchmark=suite.benchmark)
    data = matrix_gather(benchmark=suite.benchmark)
    assert gone.pk not in [n.pk for n in data.networks]
    assert len(data.networks) == 4


def _audit(net: Network, predictions: np.ndarray, labels: np.ndarray) -> None:
    from evaluator.models import AuditResult

    right = int((predictions == labels).sum())
    AuditResult.objects.create(network=net, epsilon=0.3, steps=50, restarts=2, correct=right, total=len(labels),
                               accuracy=right / len(labels), low=0.0, high=1.0,
                               predictions=storage.pack_predictions(predictions))


def test_a_network_whose_own_attack_fails_is_judged_on_its_half_by_the_attacks_that_reach_it(client) -> None:
    """A gradient decoy: its own targeted attack and the audit follow fake gradients and
    change nothing (100% right), the references' images break it on 60%, and the
    references are right on 70% of its harmless images. Read as "right on its own
    images" by its targeted attack alone it would beat every reference (1.4n against at
    most ~1.3n); by its worst case there (SPEC §2, results.own_halves) it is right on
    40% of its own half and beats none."""
    suite = fake_suite(references=3)
    labels, n = suite.labels, len(suite.labels)
    first = np.arange(n) < 0.4 * n
    decoy = stored_network(suite, "decoy", labels.astype(np.uint8),
                           {r.pk: _preds(labels, first) for r in suite.references},
                           {r.pk: _preds(labels, np.arange(n) < 0.7 * n) for r in suite.references})
    _audit(decoy, labels.astype(np.uint8), labels)
    benchmark_rank(benchmark=suite.benchmark)
    decoy.refresh_from_db()

    ladder = [Network.objects.get(pk=pk) for pk in suite.benchmark.ladder]
    by_targeted, by_worst = [], []
    for ref in ladder:
        ours_targeted, theirs = revised_counts(decoy, ref, labels)
        on_theirs = (Evaluation.objects.get(network=decoy, source=ref).prediction_array() == labels).sum()
        # Independent of the services: its own half is right only where every reference's
        # image of that eval image also failed to fool it (the first 40%).
        ours_worst = int(first.sum() + on_theirs)
        by_targeted.append(ours_targeted > theirs)
        by_worst.append(ours_worst > theirs)
    assert ladder_engine.level(by_targeted) == 3  # what the targeted attack alone would say
    assert decoy.level == ladder_engine.level(by_worst) == 0
    # The network page's comparisons read the same halves.
    from leaderboard.selectors import reference_comparisons

    rows = [c for c in reference_comparisons(network=decoy) if "ours_correct" in c]
    assert [c["ours_correct"] for c in rows] == [
        int(first.sum() + (Evaluation.objects.get(network=decoy, source=r).prediction_array() == labels).sum())
        for r in ladder]


def test_a_references_half_never_moves_as_uploads_arrive() -> None:
    """A reference's worst case on its half counts the references' sets, never an
    upload's: an upload whose images fool every reference changes no reference's half,
    level or score."""
    from evaluator.services.results import own_halves

    suite = fake_suite(references=3)
    labels, n = suite.labels, len(suite.labels)
    for ref in suite.references:
        _audit(ref, ref.adversarial.prediction_array(), labels)
    benchmark_rank(benchmark=suite.benchmark)
    before = own_halves(suite.references, labels)
    levels = {r.pk: Network.objects.get(pk=r.pk).level for r in suite.references}
    stored_network(suite, "fools everyone", _preds(labels, np.zeros(n, bool)),
                   {r.pk: _preds(labels, np.zeros(n, bool)) for r in suite.references},
                   {r.pk: _preds(labels, np.zeros(n, bool)) for r in suite.references})
    benchmark_rank(benchmark=suite.benchmark)
    after = own_halves(suite.references, labels)
    for ref in suite.references:
        np.testing.assert_array_equal(before[ref.pk], after[ref.pk])
        assert Network.objects.get(pk=ref.pk).level == levels[ref.pk]
    # And each half is the AND of the reference's stored vectors, computed by hand.
    ref = suite.references[1]
    expected = (ref.adversarial.prediction_array() == labels)
    for e in Evaluation.objects.filter(network=ref, source__isnull=True):
        expected &= e.prediction_array() == labels
    for other in suite.references:
        if other.pk != ref.pk:
            expected &= Evaluation.objects.get(network=ref, source=other).prediction_array() == labels
    np.testing.assert_array_equal(after[ref.pk], expected)
