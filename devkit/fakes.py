"""Synthetic benchmarks with stored results, for the tests of the Django layer and the
page benches (bench/page_load.py, bench/web_load.py).

No TensorFlow: predictions are drawn so that each network has a chosen robustness,
and every row is written the way the pipeline writes it (same services and
storage helpers), so pages, API and ranking read realistic data. Importing this
module needs Django set up (pytest-django, or bench/_common.django_setup).
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from dataclasses import dataclass, field

import numpy as np
from django.contrib.auth.models import User

from evaluator.engine import metrics
from evaluator.engine.datasets import Dataset, save_dataset
from evaluator.models import AdversarialDataset, Evaluation, UniversalSet
from evaluator.services import storage
from evaluator.services.ranking import benchmark_rank
from leaderboard.models import ApiToken, Benchmark, Network

EVAL = 200
CLASSES = 10


@dataclass
class FakeSuite:
    benchmark: Benchmark
    labels: np.ndarray
    references: list[Network]
    uploads: list[Network] = field(default_factory=list)


def fake_dataset(name: str = "fake", n_eval: int = EVAL, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    y_eval = np.arange(n_eval) % CLASSES
    y_train = np.arange(100) % CLASSES
    targets = (y_eval + 1 + rng.integers(0, CLASSES - 1, n_eval)) % CLASSES
    return Dataset(
        name=name,
        x_train=rng.random((100, 8, 8, 1), dtype=np.float32),
        y_train=y_train,
        x_eval=rng.random((n_eval, 8, 8, 1), dtype=np.float32),
        y_eval=y_eval,
        targets=targets,
        class_names=tuple(str(i) for i in range(CLASSES)),
        shape=(8, 8, 1),
    )


def fake_benchmark(name: str = "mnist-5k") -> tuple[Benchmark, np.ndarray]:
    ds = fake_dataset(name)
    bench = Benchmark.objects.create(name=name, title=name, height=8, width=8, channels=1,
                                     num_classes=CLASSES, class_names=list(ds.class_names),
                                     train_size=100, eval_size=len(ds.y_eval),
                                     state=Benchmark.State.READY)
    path = storage.benchmark_dir(name) / "dataset.npz"
    save_dataset(ds, path)
    bench.data_file = storage.relative(path)
    bench.save()
    universal = storage.benchmark_dir(name) / "universal.npz"
    np.savez(universal, perturbations=np.zeros((6, 8, 8, 1), np.float32))
    UniversalSet.objects.create(benchmark=bench, file=storage.relative(universal), count=6, xi=0.3)
    return bench, ds.y_eval


def _predictions(labels: np.ndarray, accuracy: float, rng: np.random.Generator) -> np.ndarray:
    right = rng.random(len(labels)) < accuracy
    wrong = (labels + 1 + rng.integers(0, CLASSES - 1, len(labels))) % CLASSES
    return np.where(right, labels, wrong).astype(np.uint8)


def _evaluation(network: Network, kind: str, preds: np.ndarray, labels: np.ndarray,
                source: Network | None = None) -> None:
    acc = metrics.accuracy(preds, labels)
    Evaluation.objects.create(
        network=network, kind=kind, source=source, correct=acc.correct, total=acc.total,
        accuracy=acc.value, low=acc.low, high=acc.high,
        confusion=metrics.confusion_matrix(labels, preds, CLASSES).tolist(),
        predictions=storage.pack_predictions(preds),
    )


def fake_network(
    bench: Benchmark, labels: np.ndarray, *, name: str, strength: float, owner: User | None = None,
    is_reference: bool = False, is_public: bool = True, peers: list[Network] = (), seed: int = 0,
) -> Network:
    """A network of robustness `strength` in [0, 1], with its row and column vs peers."""
    rng = np.random.default_rng(seed)
    net = Network.objects.create(
        benchmark=bench, name=name, owner=owner, is_reference=is_reference,
        recipe=name if is_reference else "", is_public=is_public,
        status=Network.Status.CROSS_EVALUATING, info={"model_dir": "none", "deterministic": True},
    )
    _evaluation(net, Evaluation.Kind.CLEAN, _predictions(labels, 0.95, rng), labels)
    _evaluation(net, Evaluation.Kind.UNIVERSAL, _predictions(labels, 0.5 + 0.4 * strength, rng), labels)
    own = _predictions(labels, 0.8 * strength, rng)
    file = storage.network_dir(net.pk) / "adversarial.npz"
    np.savez(file, adversarial=np.zeros((len(labels), 8, 8, 1), np.float32))
    AdversarialDataset.objects.create(
        network=net, file=storage.relative(file), epsilon=0.3, step=0.01, steps=40,
        success_rate=1 - strength, whitebox_correct=int((own == labels).sum()), total=len(labels),
        vanished_fraction=0.0, seconds=1.0, predictions=storage.pack_predictions(own),
    )
    for peer in peers:
        peer_strength = peer.params["strength"]
        # Accuracy on someone else's attack grows with own strength, shrinks with theirs.
        _evaluation(net, Evaluation.Kind.ADVERSARIAL,
                    _predictions(labels, 0.5 + 0.45 * (strength - peer_strength), rng), labels, source=peer)
        _evaluation(peer, Evaluation.Kind.ADVERSARIAL,
                    _predictions(labels, 0.5 + 0.45 * (peer_strength - strength), rng), labels, source=net)
    net.params = {"strength": strength}
    net.save()
    from evaluator.services.results import summary_refresh

    summary_refresh(net)
    return net


def fake_suite(*, references: int = 4, uploads: int = 0, name: str = "mnist-5k",
               owner: User | None = None) -> FakeSuite:
    bench, labels = fake_benchmark(name)
    nets: list[Network] = []
    for i in range(references):
        nets.append(fake_network(bench, labels, name=f"ref-{i + 1}", strength=(i + 1) / (references + 1),
                                 is_reference=True, peers=nets, seed=i))
    suite = FakeSuite(benchmark=bench, labels=labels, references=list(nets))
    for j in range(uploads):
        net = fake_network(bench, labels, name=f"upload-{j + 1}", strength=(j % 10 + 0.5) / 10,
                           owner=owner, peers=nets, seed=100 + j)
        nets.append(net)
        suite.uploads.append(net)
    benchmark_rank(benchmark=bench)
    suite.benchmark.refresh_from_db()
    return suite


# --------------------------------------------------------------------------- uploads and users


def stub_zip() -> bytes:
    """A .zip whose bytes pass the upload checks (the pipeline would reject it later).
    Distinct at every call: the same bytes uploaded twice are a duplicate (issue 14)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model/saved_model.pb", b"not really a graph")
        zf.writestr("model/assets/nonce.txt", os.urandom(8).hex())
    return buf.getvalue()


def stub_targz() -> bytes:
    buf = io.BytesIO()
    nonce = os.urandom(8).hex().encode()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in (("model/saved_model.pb", b"abc"), ("model/assets/nonce.txt", nonce)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class World:
    """alice owns one public and one private upload; bob is the other user; root is staff
    (a superuser: the operator of the admin site); each has an API token."""

    alice: User
    bob: User
    staff: User
    pub: Network  # alice's public upload
    priv: Network  # alice's private upload
    ref: Network
    alice_token: ApiToken
    bob_token: ApiToken
    staff_token: ApiToken

    def user(self, role: str) -> User | None:
        return {"anon": None, "owner": self.alice, "other": self.bob, "staff": self.staff}[role]

    def token(self, role: str) -> ApiToken | None:
        return {"anon": None, "owner": self.alice_token, "other": self.bob_token,
                "staff": self.staff_token}[role]


def fake_world() -> World:
    from leaderboard.services import token_create

    alice = User.objects.create_user("alice", password="pw-alice-123")
    bob = User.objects.create_user("bob", password="pw-bob-123")
    staff = User.objects.create_superuser("root", "root@example.com", "pw-root-123")
    suite = fake_suite(references=2)
    pub = fake_network(suite.benchmark, suite.labels, name="alice-public", strength=0.5, owner=alice,
                       peers=suite.references, seed=7)
    priv = fake_network(suite.benchmark, suite.labels, name="alice-secret", strength=0.6, owner=alice,
                        is_public=False, peers=[*suite.references, pub], seed=8)
    return World(alice=alice, bob=bob, staff=staff, pub=pub, priv=priv, ref=suite.references[0],
                 alice_token=token_create(user=alice, label="alice"),
                 bob_token=token_create(user=bob, label="bob"),
                 staff_token=token_create(user=staff, label="staff"))
