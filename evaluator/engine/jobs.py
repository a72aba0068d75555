"""Units of engine work, run inside the sandboxed child process.

Each function takes JSON-able keyword arguments (paths as strings), writes arrays to
the files it is told to, and returns a JSON-able dict. The Django side
(evaluator.services) turns these into rows. One job loads each model once and does
a whole unit (validation + clean + universal, an attack, a row and column of the
matrix; for an upload all three in evaluate_network) because starting the child and
importing TensorFlow costs seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

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
# The share of evaluate_network's 0..1 progress each phase reports in; the worker maps
# these ranges back onto the network's statuses. The attack is most of the work.
PHASES: dict[str, tuple[float, float]] = {
    "validate": (0.0, 0.12),
    "attack": (0.12, 0.85),
    "cross": (0.85, 1.0),
}


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


def _open_peer(other: dict, ds: Dataset) -> LoadedNetwork:
    """A stored peer: scanned again (cheap), then opened with its stored description."""
    if not other.get("info"):
        return _open(other["model_dir"], ds)
    from evaluator.engine.network import reopen_network

    scan_saved_model(Path(other["model_dir"]))
    return reopen_network(Path(other["model_dir"]), other["info"])


def _save_predictions(path: str, **arrays: np.ndarray) -> None:
    np.savez(path, **{k: np.asarray(v, dtype=np.uint8) for k, v in arrays.items()})


def _unpack(archive: str, extract_to: str | None, progress: Progress) -> Path:
    progress(0.05, "unpacking archive")
    target = Path(extract_to or "model")
    # A retried attempt finds the previous attempt's partial extraction here.
    shutil.rmtree(target, ignore_errors=True)
    return archive_mod.unpack_upload(Path(archive), target)


def _validate(
    model_path: Path, ds: Dataset, universal: str | None, out: str, progress: Progress
) -> tuple[LoadedNetwork, dict]:
    """Scan, load, check the contract, predict clean (+ universal) into `out`."""
    started = time.perf_counter()
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
    return net, {
        "model_dir": str(model_path.resolve()),
        "info": net.info.as_dict(),
        "ops": len(report.ops),
        "seconds": time.perf_counter() - started,
    }


def _attack(
    net: LoadedNetwork, ds: Dataset, out: str, epsilon: float, step: float, steps: int,
    progress: Progress,
) -> tuple[np.ndarray, dict]:
    """adv(B): the targeted attack on every eval image, stored as float32 in `out`."""
    from evaluator.engine.attacks import AttackConfig, targeted_attack

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
    return result.adversarial, {
        "predictions": result.predictions.astype(int).tolist(),
        "success_rate": float(result.success_rate),
        "whitebox_accuracy": float(result.whitebox_accuracy),
        "vanished_fraction": float(result.vanished_fraction),
        "seconds": float(result.seconds),
        "eot_samples": eot,
    }


def _cross(
    net: LoadedNetwork, ds: Dataset, own: np.ndarray | None, others: list[dict], out: str,
    progress: Progress,
) -> dict:
    """Row and column predictions against `others` (see cross_evaluate) into `out`."""
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
            arrays[f"column_{other['id']}"] = _open_peer(other, ds).classify(own)
            timings[f"column_{other['id']}"] = time.perf_counter() - started
    _save_predictions(out, **arrays)
    progress(1.0, "cross-evaluated")
    return {"keys": sorted(arrays), "seconds": timings}


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
    model_path = _unpack(archive, extract_to, progress) if archive else Path(model_dir or "")
    _net, value = _validate(model_path, load_dataset(Path(dataset)), universal, out, progress)
    return value


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
    """adv(B) as its own job (the build's control network, reruns)."""
    ds = load_dataset(Path(dataset))
    _adv, value = _attack(_open(model_dir, ds), ds, out, epsilon, step, steps, progress)
    return value


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

    others: [{"id": int, "model_dir": str, "adversarial": str | None, "info": dict,
              "row": bool, "column": bool}] — row: evaluate the new network on that
    network's adversarial set; column: evaluate that network (reopened with the
    `info` its validation stored) on ours.
    """
    ds = load_dataset(Path(dataset))
    net = _open(model_dir, ds)
    own = np.load(own_adversarial)["adversarial"] if own_adversarial else None
    return _cross(net, ds, own, others, out, progress)


def _phase(progress: Progress, name: str) -> Progress:
    low, high = PHASES[name]
    return lambda f, s: progress(low + (high - low) * f, s)


def _mark_done(out_dir: Path, name: str, value: dict, started: float) -> dict:
    """Write `<name>.json` after the phase's arrays: its presence means the phase is
    complete, so the worker may store it while later phases still run."""
    value = {**value, "phase_seconds": time.perf_counter() - started}
    tmp = out_dir / f"{name}.json.tmp"
    tmp.write_text(json.dumps(value))
    os.replace(tmp, out_dir / f"{name}.json")
    return value


def evaluate_network(
    *,
    dataset: str,
    out_dir: str,
    others: list[dict],
    archive: str | None = None,
    extract_to: str | None = None,
    model_dir: str | None = None,
    universal: str | None = None,
    attack: dict | None = None,
    own_adversarial: str | None = None,
    progress: Progress = _noop,
) -> dict:
    """An upload's whole evaluation in one process: validate → attack → cross.

    TensorFlow is imported and the model loaded once (as three jobs the import alone
    was ~22% of upload → ranked). Each phase writes its arrays, then `<phase>.json`,
    into out_dir: validation.json (+ validation.npz), attack.json (+ adversarial.npz),
    cross.json (+ cross.npz). With `archive` the model is unpacked and validated;
    otherwise it was validated before and is opened from `model_dir`. With `attack`
    ({epsilon, step, steps}) it is attacked; otherwise `own_adversarial` is its stored
    set. `others` as in cross_evaluate.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(Path(dataset))
    result: dict = {}
    started = time.perf_counter()
    if archive:
        report = _phase(progress, "validate")
        model_path = _unpack(archive, extract_to, report)
        net, value = _validate(model_path, ds, universal, str(out / "validation.npz"), report)
        result["validation"] = _mark_done(out, "validation", value, started)
    else:
        net = _open(model_dir or "", ds)
    if attack is not None:
        started = time.perf_counter()
        own, value = _attack(net, ds, str(out / "adversarial.npz"), progress=_phase(progress, "attack"),
                             **attack)
        result["attack"] = _mark_done(out, "attack", value, started)
    else:
        own = np.load(own_adversarial)["adversarial"] if own_adversarial else None
    started = time.perf_counter()
    value = _cross(net, ds, own, others, str(out / "cross.npz"), _phase(progress, "cross"))
    result["cross"] = _mark_done(out, "cross", value, started)
    return result


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
