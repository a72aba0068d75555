"""Units of engine work, run inside the sandboxed child process.

Each function takes JSON-able keyword arguments (paths as strings, relative to the
child's cwd: inputs under `in/`, results under `out/`, see engine.isolation), writes
arrays to the files it is told to, and returns a JSON-able dict. The Django side
(evaluator.services) turns these into rows. A job loads exactly one untrusted network's model
(SPEC §6: one untrusted model per child) and does a whole unit for it: validation,
attack and its matrix row in evaluate_network; a peer's cells of a column in classify
(several models only when all are trusted references).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from evaluator.engine import flags
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
    "attack": (0.12, 0.4),
    # The untargeted audit (engine.audit): up to ~3x the targeted attack on robust networks.
    "audit": (0.4, 0.85),
    "cross": (0.85, 1.0),
}


def _noop(fraction: float, stage: str) -> None:
    return None


def _open(model_dir: str, ds: Dataset | None, info: dict | None = None) -> LoadedNetwork:
    """Scan, then load: nothing touches the graph before the op allowlist passes. With
    `info` (what its validation learned) it is reopened without probes."""
    scan_saved_model(Path(model_dir))
    if info:
        from evaluator.engine.network import reopen_network

        return reopen_network(Path(model_dir), info)
    from evaluator.engine.network import load_network

    if ds is None:
        raise ValueError("a network opened for the first time needs the dataset's probe images")
    return load_network(
        Path(model_dir),
        expected_shape=ds.shape,
        num_classes=ds.num_classes,
        probe=ds.x_eval[:PROBE_IMAGES],
    )


def _save_predictions(path: str | Path, **arrays: np.ndarray) -> None:
    np.savez(path, **{k: np.asarray(v, dtype=np.uint8) for k, v in arrays.items()})


def _validate(
    model_path: Path, ds: Dataset, universal: str | None, out: Path, progress: Progress
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
    predicted = time.perf_counter()
    first = net.predict_log_probs(ds.x_eval, batch_size=flags.DETERMINISM_PASSES[0][0])
    arrays = {"clean": first.argmax(axis=1).astype(np.int64)}
    # One pass over the eval split: what a later peer evaluation of this network is
    # timed against (its limit is a multiple of this, not the job's whole timeout).
    eval_seconds = time.perf_counter() - predicted
    progress(0.6, "determinism and noise checks")
    net, checks = _checks(net, ds, first)
    if universal:
        progress(0.75, "universal evaluation")
        perturbations = np.load(universal)["perturbations"]
        arrays["universal"] = net.predict(universal_dataset(ds.x_eval, perturbations))
    _save_predictions(out, **arrays)
    progress(1.0, "evaluated")
    return net, {
        "info": net.info.as_dict(),
        "checks": checks,
        "ops": len(report.ops),
        "seconds": time.perf_counter() - started,
        "eval_seconds": eval_seconds,
    }


def _checks(net: LoadedNetwork, ds: Dataset, first: np.ndarray) -> tuple[LoadedNetwork, dict]:
    """The full determinism check and the memorisation check (engine.flags).

    The loader's probe (two passes over 64 images) misses a network that is
    deterministic only at that batch size: a second full pass, in other batches and a
    shuffled order, must give the same predictions. If it does not, the network is
    reopened as non-deterministic (unfrozen, so its randomness stays live) and every
    attack on it averages over several passes.
    """
    from dataclasses import replace

    from evaluator.engine.network import LoadedNetwork as Loaded

    size, _ = flags.DETERMINISM_PASSES[1]
    order = np.random.default_rng().permutation(len(ds.x_eval))
    second = np.empty_like(first)
    second[order] = net.predict_log_probs(ds.x_eval[order], batch_size=size)
    disagreements = flags.prediction_disagreements(first, second)
    probe_deterministic = net.info.deterministic
    if disagreements and probe_deterministic:
        # The loader's own objects: rebuilt around the signature itself, not the frozen graph.
        net = Loaded(net._loaded, net.signature_function, replace(net.info, deterministic=False))
    clean = first.argmax(axis=1) == ds.y_eval
    # Fresh unseeded noise every evaluation: nothing to train against.
    noisy = net.predict(flags.imperceptible_noise(ds.x_eval)) == ds.y_eval
    return net, {
        "probe_deterministic": bool(probe_deterministic),
        "disagreements": disagreements,
        "compared": int(len(ds.x_eval)),
        "passes": [list(p) for p in flags.DETERMINISM_PASSES],
        "noise_amplitude": flags.NOISE_AMPLITUDE,
        "noise_clean_correct": int(clean.sum()),
        "noise_noisy_correct": int(noisy.sum()),
    }


def _audit(net: LoadedNetwork, ds: Dataset, out: Path, epsilon: float, progress: Progress,
           universal: dict | None = None) -> dict:
    """The untargeted audit (engine.audit) and its ε curve: per-image predictions in `out`.

    With `universal` ({count, xi, seed}), universal perturbations are also fitted on this
    network (the benchmark's universal set is fitted on the control only, so for every
    other network it is a transfer figure): perturbations and predictions in
    `universal-own.npz` beside `out`.
    """
    from evaluator.engine.audit import AuditConfig, audit

    share = 0.85 if universal else 1.0
    config = AuditConfig(epsilon=epsilon, eot_samples=EOT_SAMPLES_STOCHASTIC)
    progress(0.02, "audit attack")
    result = audit(net, ds.x_eval, ds.y_eval, config,
                   progress=lambda f: progress(0.02 + (share - 0.02) * f, "audit attack"))
    _save_predictions(out, predictions=result.predictions)
    value = {
        "curve": result.curve,
        "epsilon": epsilon,
        "steps": config.steps,
        "restarts": config.restarts,
        "eot_samples": result.eot_samples,
        "gradient_steps": result.gradient_steps,
        "seconds": float(result.seconds),
    }
    if universal:
        from evaluator.engine.universal import UniversalConfig, universal_dataset, universal_perturbations

        started = time.perf_counter()
        perturbations = universal_perturbations(
            net, ds.x_train, ds.y_train, UniversalConfig(count=int(universal["count"]), xi=float(universal["xi"])),
            seed=int(universal["seed"]), progress=lambda f: progress(share + (1 - share) * f, "own universal perturbations"),
        )
        predictions = net.predict(universal_dataset(ds.x_eval, perturbations))
        np.savez_compressed(out.parent / "universal-own.npz", perturbations=perturbations.astype(np.float32),
                            predictions=np.asarray(predictions, dtype=np.uint8))
        value["universal_own"] = {"count": int(len(perturbations)), "xi": float(universal["xi"]),
                                  "seconds": time.perf_counter() - started}
    return value


def _attack(
    net: LoadedNetwork, ds: Dataset, out: Path, epsilon: float, step: float, steps: int,
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


def _rows(net: LoadedNetwork, rows: list[dict], out: Path, progress: Progress) -> dict:
    """This network on each other network's adversarial set (its row of the matrix)."""
    arrays: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {}
    for i, row in enumerate(rows):
        progress(i / max(1, len(rows)), str(row.get("name") or f"network {row['id']}"))
        started = time.perf_counter()
        arrays[f"row_{row['id']}"] = net.predict(np.load(row["adversarial"])["adversarial"])
        timings[f"row_{row['id']}"] = time.perf_counter() - started
    _save_predictions(out, **arrays)
    progress(1.0, "cross-evaluated")
    return {"keys": sorted(arrays), "seconds": timings}


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
    model_dir: str,
    out_dir: str,
    validate: bool = True,
    info: dict | None = None,
    universal: str | None = None,
    attack: dict | None = None,
    own_adversarial: str | None = None,
    rows: list[dict] | None = None,
    audit: dict | None = None,
    progress: Progress = _noop,
) -> dict:
    """One network's evaluation in one process: validate → attack → audit → its matrix row.

    TensorFlow is imported and the model loaded once. Only this one network's model is
    ever loaded here (a peer is evaluated on this network's set by `classify`, in its
    own child). Each phase writes its arrays, then `<phase>.json`, into out_dir:
    validation.json (+ validation.npz), attack.json (+ adversarial.npz), audit.json
    (+ audit.npz), cross.json (+ cross.npz). Without `validate` the model was validated
    before and is reopened with its stored `info`. With `attack` ({epsilon, step, steps}) it is attacked;
    otherwise `own_adversarial` is its stored set. With `audit` ({epsilon}) the
    untargeted audit runs (and, with audit["universal"], universal perturbations
    fitted on this network: universal-own.npz). rows: [{"id", "adversarial", "name"}].
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(Path(dataset))
    result: dict = {}
    started = time.perf_counter()
    if validate:
        net, value = _validate(Path(model_dir), ds, universal, out / "validation.npz", _phase(progress, "validate"))
        result["validation"] = _mark_done(out, "validation", value, started)
    else:
        net = _open(model_dir, ds, info)
    if attack is not None:
        started = time.perf_counter()
        _own, value = _attack(net, ds, out / "adversarial.npz", progress=_phase(progress, "attack"), **attack)
        result["attack"] = _mark_done(out, "attack", value, started)
    if audit is not None:
        started = time.perf_counter()
        value = _audit(net, ds, out / "audit.npz", progress=_phase(progress, "audit"), **audit)
        result["audit"] = _mark_done(out, "audit", value, started)
    started = time.perf_counter()
    value = _rows(net, rows or [], out / "cross.npz", _phase(progress, "cross"))
    result["cross"] = _mark_done(out, "cross", value, started)
    return result


def classify(*, models: list[dict], sets: list[dict], out: str, progress: Progress = _noop) -> dict:
    """Stored networks on adversarial sets: each model on each set (cells of their rows).

    models: [{"key", "name", "model_dir", "info"}]; sets: [{"key", "name", "adversarial"}].
    Each model is scanned again (cheap) and reopened with the description its validation
    stored (no probes, no tracing), then makes one pass over each set. The worker gives a
    child several models only when all are the suite's own references (trusted code,
    verified files); an uploaded model always comes alone. Predictions go to `out` under
    "<model key>__<set key>"; the value holds each model's mean seconds per pass.
    """
    images = {s["key"]: np.load(s["adversarial"])["adversarial"] for s in sets}
    total = max(1, len(models) * len(sets))
    arrays: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for m_index, model in enumerate(models):
        progress(m_index * len(sets) / total, f"loading {model['name']}")
        net = _open(model["model_dir"], None, model["info"])
        started = time.perf_counter()
        for s_index, item in enumerate(sets):
            progress((m_index * len(sets) + s_index) / total, f"{model['name']} on {item['name']}'s adversarial images")
            arrays[f"{model['key']}__{item['key']}"] = net.classify(images[item["key"]])
        seconds[str(model["key"])] = (time.perf_counter() - started) / max(1, len(sets))
        del net  # the next model's graph replaces this one's
    _save_predictions(out, **arrays)
    progress(1.0, "classified")
    return {"seconds": seconds}


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
    """Train one reference defense and export it as an ordinary SavedModel.

    The child is a fresh process, so TensorFlow's thread pools can still be pinned here,
    before any op runs: with the recipe's seeds and op determinism (Recipe.build), two
    builds of the same recipe and seed give the same weights bit for bit (issue 12).
    """
    from evaluator.engine.defenses import RECIPES, BuildContext
    from evaluator.engine.defenses.base import deterministic_runtime

    runtime = deterministic_runtime()
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
    return {"model_dir": str(result.model_dir), "params": result.params,
            "report": {**result.report, "runtime": runtime}}
