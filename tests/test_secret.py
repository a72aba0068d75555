"""The per-deployment secret (SPEC §2 Secrecy, issue 12): attack targets and universal
perturbations are drawn from seeds derived from it, and it is never served."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import numpy as np
import pytest

from evaluator.engine import datasets
from evaluator.services import secret
from evaluator.services.storage import media_path
from leaderboard.models import Benchmark, Network
from tests.fakes import fake_dataset


@pytest.fixture
def deployment(settings, tmp_path: Path):
    """A fresh deployment: its own media folder, so its own secret."""

    def use(name: str) -> Path:
        settings.MEDIA_ROOT = tmp_path / name / "media"
        return settings.MEDIA_ROOT

    use("first")
    return use


def test_secret_is_made_once_with_owner_only_permissions(deployment) -> None:
    first = secret.deployment_secret()
    path = secret.secret_path()
    assert len(first) == secret.SECRET_BYTES and path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert secret.deployment_secret() == first  # read back, not redrawn
    assert [p.name for p in path.parent.iterdir()] == [secret.FILE_NAME]  # no temporary left
    deployment("second")
    assert secret.deployment_secret() != first


def test_a_damaged_secret_is_refused_not_replaced(deployment) -> None:
    path = secret.secret_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"short")
    with pytest.raises(RuntimeError, match="not a 32-byte"):
        secret.deployment_secret()
    assert path.read_bytes() == b"short"


def test_derived_seeds_are_stable_separate_and_small() -> None:
    a, b = b"a" * 32, b"b" * 32
    seed = secret.derive_seed(a, "mnist-5k", "targets")
    assert seed == secret.derive_seed(a, "mnist-5k", "targets")
    others = {secret.derive_seed(b, "mnist-5k", "targets"), secret.derive_seed(a, "other", "targets"),
              secret.derive_seed(a, "mnist-5k", "universal")}
    assert seed not in others and len(others) == 3
    assert all(0 <= s < 2**63 for s in (seed, *others))  # any RNG, any JSON reader
    with pytest.raises(ValueError, match="purpose"):
        secret.derive_seed(a, "mnist-5k", "split")
    # Each network's own universal perturbations (issue 16): a seed per network and per
    # deployment, so an uploader cannot fit a model against them offline.
    own = {secret.derive_seed(key, f"mnist-5k/network-{pk}", "universal-own") for key in (a, b) for pk in (7, 8)}
    assert len(own) == 4 and seed not in own


def _stored_dataset(name: str) -> datasets.Dataset:
    from evaluator.services.benchmarks import benchmark_store_dataset

    bench, _ = Benchmark.objects.get_or_create(name=name)
    benchmark_store_dataset(benchmark=bench, dataset=fake_dataset(name, n_eval=400))
    bench.refresh_from_db()
    return datasets.load_dataset(media_path(bench.data_file))


@pytest.mark.django_db
def test_targets_differ_between_deployments_and_repeat_within_one(deployment) -> None:
    first = _stored_dataset("sec")
    again = _stored_dataset("sec")  # a rebuild of the same benchmark, same deployment
    np.testing.assert_array_equal(first.targets, again.targets)
    deployment("second")
    other = _stored_dataset("sec")
    # The split is public by design and identical; only the targets are secret.
    np.testing.assert_array_equal(first.y_eval, other.y_eval)
    np.testing.assert_array_equal(first.x_eval, other.x_eval)
    assert np.mean(first.targets == other.targets) < 0.3  # 1/9 expected by chance
    placeholder = datasets.draw_targets(first.y_eval, first.num_classes, datasets.TARGET_SEED)
    for ds in (first, other):
        assert not np.any(ds.targets == ds.y_eval)
        assert not np.array_equal(ds.targets, placeholder)  # not the public seed's draw


@pytest.mark.django_db
def test_the_universal_job_gets_a_derived_seed_not_the_secret(deployment, monkeypatch) -> None:
    from evaluator.services import benchmarks

    bench = Benchmark.objects.create(name="sec-u", data_file="benchmarks/sec-u/dataset.npz")
    control = Network.objects.create(benchmark=bench, name="control", is_reference=True, recipe="control",
                                     info={"signature": "serving_default", "model_dir": "m"})
    seen: list[dict] = []

    def fake_run(*, kwargs: dict, **_: object) -> None:
        seen.append(kwargs)
        raise benchmarks.JobFailed("stop here")

    monkeypatch.setattr(benchmarks, "job_run", fake_run)
    with pytest.raises(benchmarks.BuildError):
        benchmarks.universal_build(benchmark=bench, control=control, report=lambda _: None)
    key = secret.deployment_secret()
    assert seen[0]["seed"] == secret.derive_seed(key, "sec-u", "universal")
    sent = json.dumps(seen[0])
    assert key.hex() not in sent and base64.b64encode(key).decode() not in sent


def _body(response) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)
    return response.content


@pytest.mark.django_db
def test_the_secret_is_in_no_page_api_answer_or_download(client, world) -> None:
    """Every GET of the permission matrix (pages, API, downloads, admin), as every role."""
    from evaluator.services.benchmarks import benchmark_store_dataset
    from tests.test_permissions import MATRIX, ROLES, _request

    # The world's benchmark, stored the way a deployment stores it (targets from the secret).
    bench = world.ref.benchmark
    benchmark_store_dataset(benchmark=bench, dataset=datasets.load_dataset(media_path(bench.data_file)))
    key = secret.deployment_secret()
    needles = [key, key.hex().encode(), key.hex().upper().encode(), base64.b64encode(key),
               base64.urlsafe_b64encode(key)]
    checked = 0
    for method, url, auth, data, expected in MATRIX:
        if method != "GET":
            continue
        for role in ROLES:
            client.logout()
            response = _request(client, world, role, method, url, auth, data)
            body = _body(response)
            assert not any(n in body for n in needles), (url, role)
            checked += response.status_code == 200
    assert checked > 40  # the matrix's pages and downloads really answered
    # The media folder is not served by path.
    client.force_login(world.staff)
    assert client.get(f"/media/private/{secret.FILE_NAME}").status_code == 404
