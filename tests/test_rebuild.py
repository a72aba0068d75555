"""Rebuilding a reference leaves every stored number consistent with the stored files.

The real commands at tiny scale, on a benchmark of this file's own ("rebuild"), so the
session's mini benchmark that other tests read is never touched: import, build two
references, rank one upload, then `build_benchmark rebuild --rebuild control`. The
control defines the universal set, so its rebuild must replace the set and re-measure
every network's universal accuracy on it; the API must show a number wherever it
showed one before, and each universal accuracy must match a recomputation from the
stored model, the stored dataset and the stored universal.npz.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from evaluator.engine import metrics
from evaluator.engine.datasets import load_dataset
from evaluator.models import Evaluation, UniversalSet
from evaluator.services import benchmarks, storage
from leaderboard.models import Benchmark, Network
from tests.conftest import mini_dataset_npz

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

NAME = "rebuild"
S = Network.Status


def _api(client: Client) -> dict[str, dict[str, Any]]:
    """Every network's API detail, keyed by name (a rebuilt reference gets a new id)."""
    board = client.get(f"/api/leaderboard?benchmark={NAME}").json()
    out: dict[str, dict[str, Any]] = {}
    for row in board["networks"]:
        detail = client.get(f"/api/networks/{row['id']}?benchmark={NAME}")
        assert detail.status_code == 200, detail.content
        out[row["name"]] = {"row": row, "detail": detail.json()}
    return out


def _keyed(items: list) -> dict | list:
    """A list of pairwise rows keyed by reference name (the ladder order may change)."""
    if items and all(isinstance(x, dict) and "reference" in x for x in items):
        return {x["reference"]: x for x in items}
    return items


def _lost_numbers(before: Any, after: Any, path: str = "") -> list[str]:
    """Paths where `before` held a value and `after` holds null (or lost the key)."""
    if before is None:
        return []
    if after is None:
        return [path or "<root>"]
    if isinstance(before, dict) and isinstance(after, dict):
        return [p for k, v in before.items()
                for p in _lost_numbers(v, after.get(k), f"{path}.{k}")
                if k in after or v is not None]
    if isinstance(before, list) and isinstance(after, list):
        b, a = _keyed(before), _keyed(after)
        if isinstance(b, dict) and isinstance(a, dict):
            return _lost_numbers(b, a, path)
        if len(b) == len(a):
            return [p for i, (x, y) in enumerate(zip(b, a)) for p in _lost_numbers(x, y, f"{path}[{i}]")]
    return []


def _recomputed_universal(network: Network, bench: Benchmark) -> tuple[float, int]:
    """(universal accuracy, images) from the stored files alone: the model, the dataset
    and universal.npz, the perturbation of image i being i mod K, clipped to [0, 1]."""
    from evaluator.engine.network import load_network

    ds = load_dataset(storage.media_path(bench.data_file))
    universal = UniversalSet.objects.get(benchmark=bench)
    with np.load(storage.media_path(universal.file)) as data:
        perturbations = data["perturbations"]
    index = np.arange(len(ds.x_eval)) % len(perturbations)
    images = np.clip(ds.x_eval + perturbations[index], 0.0, 1.0).astype(np.float32)
    net = load_network(storage.media_path(network.info["model_dir"]), expected_shape=ds.shape,
                       num_classes=ds.num_classes)
    return float((net.predict(images) == ds.y_eval).mean()), len(ds.y_eval)


def test_rebuilding_the_control_re_measures_every_universal_number(tmp_path, tiny_cnn_dir, capsys) -> None:
    npz = mini_dataset_npz(tmp_path / "rebuild.npz", n_train=200, n_eval=100)
    call_command("import_benchmark", NAME, "--npz", str(npz), "--steps", "10")
    call_command("build_benchmark", NAME, "--recipes", "control,down50", "--scale", "0.1")
    try:
        call_command("rank", str(tiny_cnn_dir), "--name", "upload", "--benchmark", NAME)
    except SystemExit as exc:  # rank exits non-zero unless ranked
        pytest.fail(f"upload not ranked: {capsys.readouterr().out[-2000:]} ({exc})")
    bench = Benchmark.objects.get(name=NAME)
    client = Client()
    before = _api(client)
    assert set(before) == {"control", "down50", "upload"}
    assert all(v["row"]["universal_accuracy"] is not None for v in before.values()), before
    old_control = Network.objects.get(benchmark=bench, recipe="control").pk
    old_scores = dict(bench.reference_scores)
    assert str(old_control) in old_scores

    started = timezone.now()
    # No --scale: the rebuild trains at the scale the control was recorded with (0.1).
    call_command("build_benchmark", NAME, "--rebuild", "control")

    bench.refresh_from_db()
    after = _api(client)
    assert set(after) == set(before)
    for name in before:
        lost = _lost_numbers(before[name], after[name])
        assert not lost, f"{name}: null after the rebuild where there was a number: {lost}"
    control = Network.objects.get(benchmark=bench, recipe="control")
    assert control.pk != old_control and control.params["scale"] == 0.1
    universal = UniversalSet.objects.get(benchmark=bench)
    assert universal.source_network_id == control.pk and universal.created_at >= started
    # Scores were fitted afresh for the new set of references, and the ladder holds it.
    assert set(bench.reference_scores) == {str(pk) for pk in bench.ladder}
    assert str(control.pk) in bench.reference_scores and control.pk in bench.ladder
    assert bench.state == Benchmark.State.READY

    labels = storage.eval_labels(bench.data_file)
    for name, data in after.items():
        net = Network.objects.get(pk=data["row"]["id"])
        assert net.status == S.RANKED and net.level is not None, (name, net.status, net.reason)
        evaluation = Evaluation.objects.get(network=net, kind=Evaluation.Kind.UNIVERSAL, source__isnull=True)
        # Measured on the new set, not carried over from the overwritten file.
        assert evaluation.created_at >= started, name
        stored = evaluation.prediction_array()
        assert evaluation.accuracy == pytest.approx(metrics.accuracy(stored, labels).value)
        direct, images = _recomputed_universal(net, bench)
        shown = data["row"]["universal_accuracy"]["value"]
        # One image may flip between batchings of float arithmetic; no more.
        assert abs(shown - direct) <= 1 / images + 1e-9, (name, shown, direct)
        assert shown == pytest.approx(evaluation.accuracy)
        clean = data["row"]["clean_accuracy"]["value"]
        assert data["row"]["universal_robustness"] == pytest.approx(shown / clean)
        assert data["row"]["universal_tier"] == int(shown * 10 + 1e-9)
    # Networks ranked before keep their first ranked_at: re-measured, not new.
    upload_before = before["upload"]["detail"]["ranked_at"]
    assert after["upload"]["detail"]["ranked_at"] == upload_before
    assert datetime.fromisoformat(upload_before) < started
    # Every pair of the matrix is there again, the new control's row and column included.
    matrix = client.get(f"/api/matrix?benchmark={NAME}").json()
    assert {n["name"] for n in matrix["networks"]} == set(before)
    assert json.dumps(matrix["matrix"]).count("null") == 0


def test_discarding_the_universal_set_leaves_no_number_behind(tmp_path) -> None:
    """Summary columns go with the evaluations: a network whose re-evaluation then fails
    shows no universal accuracy rather than one measured on a deleted file."""
    from tests.fakes import fake_suite

    suite = fake_suite(references=2, uploads=1, name="discard")
    bench = suite.benchmark
    path = storage.media_path(UniversalSet.objects.get(benchmark=bench).file)
    assert path.exists()
    assert Network.objects.filter(benchmark=bench, universal_accuracy__isnull=False).count() == 3
    benchmarks._universal_discard(bench)
    assert not path.exists() and not UniversalSet.objects.filter(benchmark=bench).exists()
    assert not Evaluation.objects.filter(network__benchmark=bench, kind=Evaluation.Kind.UNIVERSAL).exists()
    for net in Network.objects.filter(benchmark=bench):
        assert (net.universal_accuracy, net.universal_low, net.universal_high) == (None, None, None)
        assert net.universal_tier is None and net.universal_robustness is None
        assert net.clean_accuracy is not None and net.whitebox_accuracy is not None
