"""End to end with real processes: web server + Celery worker, upload over HTTP,
poll the API until ranked. On the embedded default (file SQLite, filesystem broker)
and on PostgreSQL + Redis (required under CI=true). Also: kill -9 a worker in the
middle of an attack and check the job completes with exactly one row per pair."""

from __future__ import annotations

import io
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import MINI_RECIPES, MINI_SCALE, mini_dataset_npz, need
from tests.deployment import Deployment, create_postgres_database, drop_postgres_database, port_open

pytestmark = pytest.mark.slow


def zip_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, Path("exported") / path.relative_to(folder))
    return buf.getvalue()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Deployment:
    """A deployment with the mini benchmark built, stopped; others copy its state."""
    root = tmp_path_factory.mktemp("e2e")
    var = root / "sqlite"
    d = Deployment(var_dir=var, database_url=f"sqlite:///{var / 'db.sqlite3'}")
    d.manage("migrate")
    npz = mini_dataset_npz(root / "mini.npz")
    d.manage("import_benchmark", "mini", "--npz", str(npz), "--steps", "20")
    d.manage("build_benchmark", "mini", "--recipes", MINI_RECIPES, "--scale", MINI_SCALE)
    d.manage("dumpdata", "leaderboard", "evaluator", "--output", str(root / "state.json"))
    return d


@pytest.fixture(scope="module")
def sqlite_deployment(built: Deployment):
    built.start_web()
    built.start_worker()
    yield built
    built.stop()


@pytest.fixture(scope="module")
def postgres_deployment(built: Deployment, tmp_path_factory):
    need(port_open("127.0.0.1", 5432), "PostgreSQL is not listening on 127.0.0.1:5432")
    need(port_open("127.0.0.1", 6379), "Redis is not listening on 127.0.0.1:6379")
    import redis

    # A clean queue: messages left by an earlier, interrupted run would be noise.
    redis.Redis(host="127.0.0.1", port=6379, db=7).flushdb()
    url = create_postgres_database()
    var = tmp_path_factory.mktemp("pg")
    shutil.copytree(built.var_dir / "media", var / "media")
    d = Deployment(var_dir=var, database_url=url, broker_url="redis://127.0.0.1:6379/7")
    d.manage("migrate")
    d.manage("loaddata", str(built.var_dir.parent / "state.json"))
    d.start_web()
    d.start_worker()
    d.start_worker()
    yield d
    d.stop()
    drop_postgres_database(url)


def _token(d: Deployment, user: str) -> str:
    return d.manage("create_token", user, "--create").stdout.strip().splitlines()[-1]


def _check_ranked(d: Deployment, network_id: int) -> dict:
    data = d.wait_finished(network_id)
    assert data["status"] == "ranked", data
    assert isinstance(data["level"], int) and data["progress"] == 100
    status, matrix = d.request("GET", "/api/matrix?benchmark=mini")
    assert status == 200
    ids = [n["id"] for n in matrix["networks"]]
    assert network_id in ids
    i = ids.index(network_id)
    n = len(ids)
    row = matrix["matrix"][i]
    column = [matrix["matrix"][j][i] for j in range(n)]
    assert len(row) == n and all(0.0 <= v <= 1.0 for v in row + column)
    refs = [x for x in data["pairwise"] if "ours" in x]
    assert len(refs) == 3
    return data


def test_upload_over_http_to_ranked_on_embedded_default(sqlite_deployment, tiny_cnn_dir) -> None:
    d = sqlite_deployment
    status, body = d.upload(_token(d, "alice"), zip_folder(tiny_cnn_dir), "tiny-sqlite", benchmark="mini")
    assert status == 202, body
    assert body["status"] == "queued"
    _check_ranked(d, body["id"])


def test_upload_over_http_to_ranked_on_postgres_and_redis(postgres_deployment, tiny_cnn_dir) -> None:
    d = postgres_deployment
    token = _token(d, "bob")
    ids = []
    for i in range(2):
        status, body = d.upload(token, zip_folder(tiny_cnn_dir), f"tiny-pg-{i}", benchmark="mini")
        assert status == 202, body
        ids.append(body["id"])
    for network_id in ids:
        _check_ranked(d, network_id)
    # Both uploads met each other although they ran concurrently on two workers.
    status, matrix = d.request("GET", "/api/matrix?benchmark=mini")
    assert set(ids) <= {n["id"] for n in matrix["networks"]}


def test_worker_killed_mid_attack_then_restarted_completes(sqlite_deployment, tiny_cnn_dir) -> None:
    d = sqlite_deployment
    status, body = d.upload(_token(d, "carol"), zip_folder(tiny_cnn_dir), "tiny-killed", benchmark="mini")
    assert status == 202
    network_id = body["id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        _, data = d.request("GET", f"/api/networks/{network_id}")
        if data["status"] == "attacking":
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"never reached attacking: {data}")
    d.kill_worker(d.workers[0])
    d.workers.pop(0)
    d.start_worker()
    data = _check_ranked(d, network_id)
    counts = d.manage(
        "shell", "-c",
        "from evaluator.models import Evaluation, AdversarialDataset;"
        "from django.db.models import Count;"
        f"q = Evaluation.objects.filter(network_id={network_id}) | Evaluation.objects.filter(source_id={network_id});"
        "dup = q.values('network_id', 'kind', 'source_id').annotate(c=Count('id')).filter(c__gt=1).count();"
        f"print(dup, q.count(), AdversarialDataset.objects.filter(network_id={network_id}).count())",
    ).stdout.split()
    duplicates, total, attacks = map(int, counts[-3:])
    assert duplicates == 0 and attacks == 1
    assert data["status"] == "ranked"
