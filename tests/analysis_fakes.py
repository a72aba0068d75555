"""Issue-15 analysis rows for the synthetic benchmarks of tests.fakes, without TensorFlow.

The real engine (engine.analysis_jobs.compute) runs on the fake benchmark's arrays with
NumPy stand-ins for the two models (a "discriminator" that scores mean brightness, a
"control" whose features are a fixed linear map of the pixels), and the rows are stored
by the real service function (services.analysis.analysis_store), so pages, API and the
report read exactly what a build would have stored.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from evaluator.engine import analysis_jobs
from evaluator.engine.datasets import load_dataset
from evaluator.models import AdversarialDataset, UniversalSet
from evaluator.services import analysis, storage
from leaderboard.models import Benchmark


def fake_adversarial_sets(bench: Benchmark, seed: int = 0) -> None:
    """Replace the fakes' all-zero sets with ±ε sign perturbations of the eval images
    (different strengths per network), and the universal set with ±ξ patterns."""
    ds = load_dataset(storage.media_path(bench.data_file))
    rng = np.random.default_rng(seed)
    for i, adv in enumerate(AdversarialDataset.objects.filter(network__benchmark=bench).order_by("network_id")):
        mask = rng.random(ds.x_eval.shape) < 0.3 + 0.1 * (i % 5)
        step = rng.choice([-1.0, 1.0], size=ds.x_eval.shape) * bench.epsilon * mask
        x = np.clip(ds.x_eval + step, 0.0, 1.0).astype(np.float32)
        np.savez(storage.media_path(adv.file), adversarial=x, targets=ds.targets)
    universal = UniversalSet.objects.get(benchmark=bench)
    np.savez(storage.media_path(universal.file),
             perturbations=rng.choice([-bench.universal_xi, bench.universal_xi],
                                      size=(universal.count, *ds.shape)).astype(np.float32))


def fake_analysis(bench: Benchmark, *, discriminator: bool = True) -> analysis.Sources:
    """Analyse every set of a fake benchmark and store the rows; returns the sources used."""
    ds = load_dataset(storage.media_path(bench.data_file))
    weights = np.random.default_rng(1).standard_normal((int(np.prod(ds.shape)), 12)).astype(np.float32)

    def features(x: np.ndarray) -> np.ndarray:
        return np.maximum(x.reshape(len(x), -1) @ weights, 0.0)

    def brightness(x: np.ndarray) -> np.ndarray:
        return -x.reshape(len(x), -1).mean(axis=1).astype(np.float64)

    src = analysis.Sources(bench, None, None, None, UniversalSet.objects.filter(benchmark=bench).first(),
                           fingerprint="fake")
    items = analysis.items_for(src)
    out = Path(tempfile.mkdtemp(prefix="analysis-"))
    try:
        sets = [{"key": it.key, "file": str(it.file), "universal": it.kind == "universal"} for it in items]
        value = analysis_jobs.compute(ds, out, sets, max(bench.epsilon, bench.universal_xi),
                                      features=(features, "penultimate"),
                                      discriminator=brightness if discriminator else None)
        analysis.analysis_store(sources=src, items=items, value=value, out=out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return src
