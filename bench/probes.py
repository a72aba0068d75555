"""Targets run by evaluator.engine.sandbox in its child process (PYTHONPATH = project
root), so they measure exactly what a job pays: process start, imports, loads, compute.

Only the standard library at the top: importing this module is part of what
probe_noop measures.
"""

from __future__ import annotations

import time
from pathlib import Path


def probe_noop() -> dict:
    return {"ok": True}


def probe_import_tf() -> dict:
    started = time.perf_counter()
    import tensorflow  # noqa: F401

    return {"import_tf": time.perf_counter() - started}


def probe_model(*, model_dir: str, dataset: str, universal: str | None = None,
                adversarial: str | None = None, peers: list[str] = ()) -> dict:
    """Time the parts of a validate/cross job one by one on the given model."""
    import numpy as np

    t: dict[str, float] = {}
    started = time.perf_counter()
    import tensorflow  # noqa: F401

    t["import_tf"] = time.perf_counter() - started
    mark = time.perf_counter()
    from evaluator.engine.datasets import load_dataset
    from evaluator.engine.network import load_network
    from evaluator.engine.opscan import scan_saved_model
    from evaluator.engine.universal import universal_dataset

    t["import_engine"] = time.perf_counter() - mark
    mark = time.perf_counter()
    ds = load_dataset(Path(dataset))
    t["load_dataset"] = time.perf_counter() - mark

    def load(path: str):
        scan_saved_model(Path(path))
        return load_network(Path(path), expected_shape=ds.shape, num_classes=ds.num_classes,
                            probe=ds.x_eval[:64])

    mark = time.perf_counter()
    net = load(model_dir)
    t["scan_load"] = time.perf_counter() - mark
    mark = time.perf_counter()
    net.predict(ds.x_eval)
    t["predict_clean"] = time.perf_counter() - mark
    mark = time.perf_counter()
    net.predict(ds.x_eval)
    t["predict_clean_again"] = time.perf_counter() - mark
    if universal:
        mark = time.perf_counter()
        x = universal_dataset(ds.x_eval, np.load(universal)["perturbations"])
        net.predict(x)
        t["predict_universal"] = time.perf_counter() - mark
    if adversarial:
        mark = time.perf_counter()
        net.predict(np.load(adversarial)["adversarial"])
        t["predict_adversarial"] = time.perf_counter() - mark
    # A peer in the cross job: scan + load, then one predict on the new network's
    # adversarial set (the first call retraces for the batch size; the second is compute).
    loads, firsts, agains = [], [], []
    own_adv = np.load(adversarial)["adversarial"] if adversarial else ds.x_eval
    for path in peers:
        mark = time.perf_counter()
        peer = load(path)
        loads.append(time.perf_counter() - mark)
        mark = time.perf_counter()
        peer.predict(own_adv)
        firsts.append(time.perf_counter() - mark)
        mark = time.perf_counter()
        peer.predict(own_adv)
        agains.append(time.perf_counter() - mark)
    t["peer_loads"], t["peer_first_predict"], t["peer_predict"] = loads, firsts, agains
    t["total_in_child"] = time.perf_counter() - started
    return t
