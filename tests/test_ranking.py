"""Ranking recomputed from stored rows: matrix gathering, ladder, levels, scores."""

from __future__ import annotations

import numpy as np
import pytest

from evaluator.engine import ladder as ladder_engine
from evaluator.models import Evaluation
from evaluator.services.ranking import benchmark_rank, matrix_gather
from leaderboard.models import Network
from tests.fakes import fake_network, fake_suite

pytestmark = pytest.mark.django_db


def test_matrix_matches_stored_evaluations() -> None:
    suite = fake_suite(references=4)
    data = matrix_gather(benchmark=suite.benchmark)
    assert [n.pk for n in data.networks] == sorted(n.pk for n in suite.references)
    for i, a in enumerate(data.networks):
        for j, b in enumerate(data.networks):
            if i == j:
                expected = a.adversarial.whitebox_correct / a.adversarial.total
            else:
                expected = Evaluation.objects.get(network=a, source=b).accuracy
            assert data.M[i, j] == pytest.approx(expected)


def test_ladder_levels_and_scores_follow_strength() -> None:
    suite = fake_suite(references=4, uploads=0)
    bench = suite.benchmark
    # References were made with increasing strength, so the ladder keeps that order.
    assert bench.ladder == [n.pk for n in suite.references]
    levels = [Network.objects.get(pk=pk).level for pk in bench.ladder]
    assert levels == [1, 2, 3, 4]
    scores = [Network.objects.get(pk=pk).score for pk in bench.ladder]
    assert scores == sorted(scores)
    assert all(Network.objects.get(pk=pk).status == Network.Status.RANKED for pk in bench.ladder)


def test_upload_level_sits_between_references() -> None:
    suite = fake_suite(references=4)
    refs = suite.references
    upload = fake_network(suite.benchmark, suite.labels, name="mid", strength=0.5, peers=refs, seed=7)
    benchmark_rank(benchmark=suite.benchmark)
    upload.refresh_from_db()
    # Independent check: count the leading wins on the stored accuracies directly.
    wins = []
    for ref in refs:
        ours = Evaluation.objects.get(network=upload, source=ref).accuracy
        theirs = Evaluation.objects.get(network=ref, source=upload).accuracy
        wins.append(ours > theirs)
    assert upload.level == ladder_engine.level(wins)
    assert upload.status == Network.Status.RANKED


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


def test_deleted_network_leaves_matrix_and_ranking() -> None:
    suite = fake_suite(references=3, uploads=2)
    gone = suite.uploads[0]
    gone.delete()
    benchmark_rank(benchmark=suite.benchmark)
    data = matrix_gather(benchmark=suite.benchmark)
    assert gone.pk not in [n.pk for n in data.networks]
    assert len(data.networks) == 4
