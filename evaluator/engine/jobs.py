"""Units of engine work, run inside the sandboxed child process.

Each function takes JSON-able keyword arguments (paths as strings), writes arrays to
the files it is told to, and returns a JSON-able dict. The Django side
(evaluator.services) turns these into rows. One job loads each model once and does
a whole unit (validation + clean + universal, an attack, a row and column of the
matrix) because starting the child and importing TensorFlow costs seconds.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

from typing import TYPE_CHECKING

import numpy as np

from evaluator.engine import archive as archive_mod
from evaluator.engine.datasets import Dataset, load_dataset
from evaluator.engine.opscan import scan_saved_model

if TYPE_CHECKING:
    from evaluator.engine.network import LoadedNetwork

# TensorFlow (network, attacks, universal, defenses) is imported inside the functions:
# a hostile archive is then refused in a fraction of a second, before the ~3 s import.

Progress = Callable[[float, str], None]

PROBE_IMAGES = 64
# More passes per step for networks with randomness inside (expectation over noise).
EOT_SAMPLES_STOCHASTIC = 4


def _noop(fraction: float, stage: str) -> None:
    return None


def _open(model_dir: str, ds: Dataset) -> LoadedNetwork:
    """Scan, then load: nothing touches the graph before the op allowlist passes."""
    from evaluator.engine.network import load_network

    scan_saved_model(Path(model_dir))
    return load_network(
        Path(model_dir),
        expected_shape=ds.shape,
        num_classes=ds.num_classes,
        probe=ds.x_eval[:PROBE_IMAGES],
    )


def _save_predictions(path: str, **arrays: np.ndarray) -> None:
    np.savez(path, **{k: np.asarray(v, dtype=np.uint8) for k, v in arrays.items()})


def validate_and_evaluate(
    *,
    dataset: str,
    out: str,
    model_dir: str | None = None,
    archive: str | None = None,
    extract_to: str | None = None,
    universal: str | None = None,
    progress: Progress = _noop,
) -> dict:
    """Unpack (uploads), scan, load, check the contract, predict clean + universal."""
    started = time.perf_counter()
    if archive:
        progress(0.05, "unpacking archive")
        target = Path(extract_to or "model")
        # A retried attempt finds the previous attempt's partial extraction here.
        shutil.rmtree(target, ignore_errors=True)
        model_path = archive_mod.unpack_upload(Path(archive), target)
    else:
        model_path = Path(model_dir or "")
    ds = load_dataset(Path(dataset))
    progress(0.2, "scanning ops")
    report = scan_saved_model(model_path)
    progress(0.35, "loading model")
    from evaluator.engine.network import load_network
    from evaluator.engine.universal import universal_dataset

    net = load_network(
        model_path,
        expected_shape=ds.shape,
        num_classes=ds.num_classes,
        probe=ds.x_eval[:PROBE_IMAGES],
    )
    progress(0.5, "clean evaluation")
    arrays = {"clean": net.predict(ds.x_eval)}
    if universal:
        progress(0.75, "universal evaluation")
        perturbations = np.load(universal)["perturbations"]
        arrays["universal"] = net.predict(universal_dataset(ds.x_eval, perturbations))
    _save_predictions(out, **arrays)
    progress(1.0, "evaluated")
    return {
        "model_dir": str(model_path.resolve()),
        "info": net.info.as_dict(),
        "ops": len(report.ops),
        "seconds": time.perf_counter() - started,
    }


def attack(
    *,
    model_dir: str,
    dataset: str,
    out: str,
    epsilon: float,
    step: float,
    steps: int,
    progress: Progress = _noop,
) -> dict:
    """adv(B): the targeted attack on every eval image, stored as float32."""
    from evaluator.engine.attacks import AttackConfig, targeted_attack

    ds = load_dataset(Path(dataset))
    net = _open(model_dir, ds)
    eot = 1 if net.info.deterministic else EOT_SAMPLES_STOCHASTIC
    config = AttackConfig(epsilon=epsilon, step=step, steps=steps, eot_samples=eot)
    progress(0.05, "attacking")
    result = targeted_attack(
        net,
        ds.x_eval,
        ds.y_eval,
        ds.targets,
        config,
        progress=lambda f: progress(0.05 + 0.9 * f, "attacking"),
    )
    np.savez_compressed(out, adversarial=result.adversarial, targets=result.targets)
    return {
        "predictions": result.predictions.astype(int).tolist(),
        "success_rate": float(result.success_rate),
        "whitebox_accuracy": float(result.whitebox_accuracy),
        "vanished_fraction": float(result.vanished_fraction),
        "seconds": float(result.seconds),
        "eot_samples": eot,
    }


def cross_evaluate(
    *,
    model_dir: str,
    dataset: str,
    own_adversarial: str | None,
    others: list[dict],
    out: str,
    progress: Progress = _noop,
) -> dict:
    """The new network's row and column of the matrix.

    others: [{"id": int, "model_dir": str, "adversarial": str | None,
              "row": bool, "column": bool}] — row: evaluate the new network on that
    network's adversarial set; column: evaluate that network on ours.
    """
    ds = load_dataset(Path(dataset))
    net = _open(model_dir, ds)
    own = np.load(own_adversarial)["adversarial"] if own_adversarial else None
    arrays: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {}
    for i, other in enumerate(others):
        progress(i / max(1, len(others)), f"network {other['id']}")
        if other.get("row") and other.get("adversarial"):
            started = time.perf_counter()
            adv = np.load(other["adversarial"])["adversarial"]
            arrays[f"row_{other['id']}"] = net.predict(adv)
            timings[f"row_{other['id']}"] = time.perf_counter() - started
        if other.get("column") and own is not None:
            started = time.perf_counter()
            other_net = _open(other["model_dir"], ds)
            arrays[f"column_{other['id']}"] = other_net.predict(own)
            timings[f"column_{other['id']}"] = time.perf_counter() - started
    _save_predictions(out, **arrays)
    progress(1.0, "cross-evaluated")
    return {"keys": sorted(arrays), "seconds": timings}


def compute_universal(
    *,
    model_dir: str,
    dataset: str,
    out: str,
    count: int,
    xi: float,
    seed: int = 0,
    progress: Progress = _noop,
) -> dict:
    """K universal perturbations against the control network, on train images."""
    from evaluator.engine.universal import UniversalConfig, universal_perturbations

    ds = load_dataset(Path(dataset))
    net = _open(model_dir, ds)
    started = time.perf_counter()
    perturbations = universal_perturbations(
        net,
        ds.x_train,
        ds.y_train,
        UniversalConfig(count=count, xi=xi),
        seed=seed,
        progress=lambda f: progress(f, "universal perturbations"),
    )
    np.savez_compressed(out, perturbations=perturbations.astype(np.float32))
    return {"seconds": time.perf_counter() - started, "count": int(len(perturbations))}


def build_reference(
    *,
    recipe: str,
    dataset: str,
    out_dir: str,
    seed: int = 0,
    scale: float = 1.0,
    params: dict | None = None,
    probe: str | None = None,
    progress: Progress = _noop,
) -> dict:
    """Train one reference defense and export it as an ordinary SavedModel."""
    from evaluator.engine.defenses import RECIPES, BuildContext

    ds = load_dataset(Path(dataset))
    probe_arrays = None
    if probe:
        data = np.load(probe)
        probe_arrays = (data["adversarial"], data["labels"])
    result = RECIPES[recipe].build(
        BuildContext(
            dataset=ds,
            out_dir=Path(out_dir),
            seed=seed,
            scale=scale,
            params=dict(params or {}),
            progress=progress,
            probe=probe_arrays,
        )
    )
    return {"model_dir": str(result.model_dir), "params": result.params, "report": result.report}
