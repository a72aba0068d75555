"""The analysis job of issue 15 (detection and vector space), run in a sandbox child.

Like engine.jobs it takes JSON-able keyword arguments with paths relative to the
child's cwd (inputs under `in/`, results under `out/`) and returns a JSON-able dict. It
loads only trusted models, the references' own: the control (penultimate features for
the Mahalanobis detector) and the gan-data reference's discriminator. Adversarial sets
are data, read with allow_pickle=False.

out/basis.npz holds what every set is compared with (PCA of the train images, the
clean images' scores, projection and neighbour distances, the Mahalanobis fit); a later
job gets it back as `basis` and only scores its new sets. out/<key>.npz holds one set's
per-image arrays, so every stored figure can be recomputed from them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from evaluator.engine import detection, vectorspace
from evaluator.engine.datasets import Dataset, load_dataset

Progress = Callable[[float, str], None]
Scorer = Callable[[np.ndarray], np.ndarray]
BATCH = 500
PROBE = 64
FEATURES_MATCH = 1e-3  # max |log-prob difference| for the rebuilt control to count as the stored one


def _noop(fraction: float, stage: str) -> None:
    return None


def _batched(fn: Callable[[np.ndarray], Any], x: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(fn(x[i : i + BATCH])) for i in range(0, len(x), BATCH)])


# --------------------------------------------------------------------------- trusted models


def control_features(model_dir: str, info: dict, params: dict, ds: Dataset) -> tuple[Scorer, str]:
    """(features of images, what they are): the control's penultimate layer when its
    architecture can be rebuilt from the recorded parameters and its stored weights give
    the stored model's outputs; otherwise its log-probabilities (documented fallback)."""
    import keras
    import tensorflow as tf

    from evaluator.engine.network import reopen_network
    from evaluator.engine.opscan import scan_saved_model

    scan_saved_model(Path(model_dir))  # as for every model: nothing loads before the scan
    net = reopen_network(Path(model_dir), info)
    probe = ds.x_eval[:PROBE]
    try:
        from evaluator.engine.defenses import RECIPES, base

        recipe = RECIPES["control"]
        # The recorded parameters the recipe takes (the backbone option included, when there is one).
        known = {*recipe.defaults, *getattr(base, "BACKBONE_DEFAULTS", {})}
        model = base.classifier(ds, recipe.resolve({k: v for k, v in params.items() if k in known}), name="control")
        model.set_weights([v.numpy() for v in net._loaded.variables])
        ours = tf.nn.log_softmax(model(probe, training=False)).numpy()
        if np.abs(ours - net.predict_log_probs(probe)).max() <= FEATURES_MATCH:
            penultimate = keras.Model(model.input, model.layers[-2].output)
            return (lambda x: _batched(lambda b: penultimate(b, training=False), x).reshape(len(x), -1),
                    "penultimate")
    except (ValueError, KeyError, TypeError):
        pass  # another architecture than the control recipe's: fall back to its outputs
    return (lambda x: net.predict_log_probs(x)), "log-probabilities"


def discriminator_scorer(folder: str) -> Scorer:
    """Minus the discriminator's real/fake logit: higher = less like a real image."""
    import keras

    from evaluator.engine.defenses.gan import DISCRIMINATOR_FILE

    model = keras.models.load_model(Path(folder) / DISCRIMINATOR_FILE, compile=False, safe_mode=True)
    return lambda x: -_batched(lambda b: model(b, training=False)[:, 0], x).astype(np.float64)


# --------------------------------------------------------------------------- basis


def _basis_compute(ds: Dataset, features: tuple[Scorer, str] | None, discriminator: Scorer | None,
                   progress: Progress) -> dict[str, np.ndarray]:
    progress(0.05, "principal components of the train images")
    basis = vectorspace.pca_basis(ds.x_train)
    arrays: dict[str, np.ndarray] = {
        "mean": basis.mean, "components": basis.components, "explained": basis.explained,
        "clean_projection": vectorspace.project(ds.x_eval, basis),
    }
    progress(0.15, "nearest train images of the clean images")
    arrays["clean_distances"] = vectorspace.nearest_by_class(ds.x_eval, ds.x_train, ds.y_train, ds.num_classes)
    if features is not None:
        progress(0.2, "Mahalanobis fit on the control's features")
        extract, kind = features
        fit = detection.mahalanobis_fit(extract(ds.x_train), ds.y_train, ds.num_classes)
        arrays.update(maha_means=fit.means, maha_precision=fit.precision, maha_present=fit.present,
                      features=np.array(kind))
        arrays["clean_mahalanobis"] = detection.mahalanobis_score(fit, extract(ds.x_eval))
    if discriminator is not None:
        progress(0.25, "discriminator on the clean images")
        arrays["clean_discriminator"] = discriminator(ds.x_eval)
    return arrays


def _basis_summary(arrays: dict[str, np.ndarray], ds: Dataset) -> dict:
    basis = _as_basis(arrays)
    ks = vectorspace.ks_for(basis)
    cumulative = np.cumsum(basis.explained)
    return {
        "dims": basis.dims, "train": int(len(ds.x_train)), "eval": int(len(ds.x_eval)), "ks": ks,
        "explained": [float(cumulative[k - 1]) for k in ks],
        "features": str(arrays["features"]) if "features" in arrays else None,
        "feature_dims": int(arrays["maha_means"].shape[1]) if "maha_means" in arrays else None,
        "detectors": [d for d in detection.DETECTORS if f"clean_{d}" in arrays],
        "clean_other_class": vectorspace.share_interval(arrays["clean_distances"].argmin(axis=1) != ds.y_eval),
    }


def _as_basis(arrays: dict[str, np.ndarray]) -> vectorspace.PCABasis:
    return vectorspace.PCABasis(mean=arrays["mean"], components=arrays["components"], explained=arrays["explained"])


# --------------------------------------------------------------------------- one set


def _set_images(ds: Dataset, item: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """(adversarial images, target classes or None) of one set."""
    with np.load(item["file"], allow_pickle=False) as data:
        if item.get("universal"):
            from evaluator.engine.universal import universal_dataset

            return universal_dataset(ds.x_eval, data["perturbations"]), None
        x = data["adversarial"].astype(np.float32)
        targets = data["targets"].astype(np.int64) if "targets" in data.files else ds.targets
    if x.shape != ds.x_eval.shape:
        raise ValueError(f"set {item['key']}: {x.shape} images, the eval split is {ds.x_eval.shape}")
    return x, np.asarray(targets, dtype=np.int64)


def _analyse_set(ds: Dataset, item: dict, basis: dict[str, np.ndarray], scorers: dict[str, Scorer],
                 budget: float, out: Path) -> dict:
    started = time.perf_counter()
    x_adv, targets = _set_images(ds, item)
    pca = _as_basis(basis)
    ks = vectorspace.ks_for(pca)
    arrays = vectorspace.analyse_set(ds.x_eval, x_adv, pca, ks, ds.x_train, ds.y_train, ds.num_classes)
    found: dict[str, dict] = {}
    saved = arrays.as_dict()
    for name, score in scorers.items():
        adv_scores = score(x_adv)
        saved[f"score_{name}"] = adv_scores
        found[name] = detection.detect(basis[f"clean_{name}"], adv_scores).as_dict()
    if targets is not None:
        saved["targets"] = targets
    np.savez_compressed(out / f"{item['key']}.npz", **saved)
    summary = vectorspace.summarise(arrays, basis["clean_distances"], ds.y_eval, targets, ks,
                                    vectorspace.histogram_edges(pca.dims, budget))
    return {"detection": found, "vectorspace": summary, "seconds": time.perf_counter() - started}


def analyse(
    *,
    dataset: str,
    out_dir: str,
    sets: list[dict],
    budget: float,
    control: dict | None = None,
    discriminator: str | None = None,
    basis: str | None = None,
    progress: Progress = _noop,
) -> dict:
    """The job: detection and vector-space figures of each set in `sets` ([{"key", "file",
    "universal"}]). control: {"model_dir", "info", "params"} of the control reference;
    discriminator: the folder holding the gan-data discriminator; basis: a basis.npz
    written by an earlier run (else computed here and written to out/basis.npz).
    `budget` (the largest L∞ budget of the benchmark's attacks) fixes the histogram bins."""
    ds = load_dataset(Path(dataset))
    progress(0.01, "loading the control and the discriminator")
    features = control_features(ds=ds, **control) if control else None
    disc = discriminator_scorer(discriminator) if discriminator else None
    stored = None
    if basis is not None:
        with np.load(basis, allow_pickle=False) as data:
            stored = {k: data[k] for k in data.files}
    return compute(ds, Path(out_dir), sets, budget, features=features, discriminator=disc, basis=stored,
                   progress=progress)


def compute(ds: Dataset, out: Path, sets: list[dict], budget: float, *, features: tuple[Scorer, str] | None,
            discriminator: Scorer | None, basis: dict[str, np.ndarray] | None = None,
            progress: Progress = _noop) -> dict:
    """`analyse` once the detectors are callables (the models loaded, or stand-ins in tests):
    {"basis": summary or None (when given), "sets": {key: {"detection", "vectorspace", "seconds"}}}."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"basis": None, "sets": {}}
    arrays = basis
    if arrays is None:
        arrays = _basis_compute(ds, features, discriminator, progress)
        np.savez_compressed(out / "basis.npz", **arrays)
        result["basis"] = _basis_summary(arrays, ds)
    scorers: dict[str, Scorer] = {}
    if discriminator is not None and "clean_discriminator" in arrays:
        scorers["discriminator"] = discriminator
    if features is not None and "maha_means" in arrays:
        fit = detection.GaussianFit(arrays["maha_means"], arrays["maha_precision"], arrays["maha_present"])
        extract = features[0]
        scorers["mahalanobis"] = lambda x: detection.mahalanobis_score(fit, extract(x))
    for i, item in enumerate(sets):
        progress(0.3 + 0.7 * i / max(1, len(sets)), f"set {i + 1}/{len(sets)}")
        result["sets"][item["key"]] = _analyse_set(ds, item, arrays, scorers, budget, out)
    progress(1.0, "analysed")
    result["seconds"] = time.perf_counter() - started
    return result
