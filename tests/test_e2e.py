"""End to end with real processes: web server + Celery worker, upload over HTTP,
poll the API until ranked. On the embedded default (file SQLite, filesystem broker)
and on PostgreSQL + Redis (required under CI=true). Also: kill -9 a worker in the
middle of an attack and check the job completes with exactly one row per pair."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import need
from tests.deployment import (
    Deployment,
    create_postgres_database,
    drop_postgres_database,
    port_open,
    zip_folder,
)

# django_db: the session's test database must exist (pytest-django sets one up only
# for the aliases that marked tests ask for; mini_benchmark writes into it).
pytestmark = [pytest.mark.slow, pytest.mark.django_db]


@pytest.fixture(scope="module")
def state(mini_benchmark, django_db_blocker, tmp_path_factory) -> Path:
    """The session's mini benchmark (built once, in-process) as a fixture file plus
    media folder, which each deployment below loads instead of building it again."""
    from django.conf import settings
    from django.core.management import call_command

    root = tmp_path_factory.mktemp("state")
    with django_db_blocker.unblock():
        call_command("dumpdata", "leaderboard", "evaluator", "--output", str(root / "state.json"))
    shutil.copytree(settings.MEDIA_ROOT, root / "media")
    return root


def _deploy(state: Path, var: Path, database_url: str, broker_url: str = "filesystem://") -> Deployment:
    shutil.copytree(state / "media", var / "media")
    d = Deployment(var_dir=var, database_url=database_url, broker_url=broker_url)
    d.manage("migrate")
    d.manage("loaddata", str(state / "state.json"))
    return d


@pytest.fixture(scope="module")
def built(state: Path, tmp_path_factory) -> Deployment:
    var = tmp_path_factory.mktemp("e2e") / "sqlite"
    return _deploy(state, var, f"sqlite:///{var / 'db.sqlite3'}")


@pytest.fixture(scope="module")
def sqlite_deployment(built: Deployment):
    built.start_web()
    built.start_worker()
    yield built
    built.stop()


@pytest.fixture(scope="module")
def postgres_deployment(state: Path, tmp_path_factory):
    need(port_open("127.0.0.1", 5432), "PostgreSQL is not listening on 127.0.0.1:5432")
    need(port_open("127.0.0.1", 6379), "Redis is not listening on 127.0.0.1:6379")
    db = _claim_redis_db()
    url = create_postgres_database()
    d = _deploy(state, tmp_path_factory.mktemp("pg"), url, f"redis://127.0.0.1:6379/{db}")
    d.start_web()
    d.start_worker()
    d.start_worker()
    yield d
    d.stop()
    drop_postgres_database(url)
    _redis(db).flushdb()  # the claim goes with it


def _redis(db: int):
    import redis

    return redis.Redis(host="127.0.0.1", port=6379, db=db)


CLAIM = "robustness-ladder-test-run"


def _claim_redis_db() -> int:
    """A Redis database of this run's own (1-15): two runs on one machine (a developer's
    and a CI clone) sharing one would each have their workers take the other's tasks.
    Claimed with SET NX (expiring, should a run be killed), then emptied of whatever an
    interrupted run left, except the claim."""
    for db in range(1, 16):
        r = _redis(db)
        if r.set(CLAIM, os.getpid(), nx=True, ex=3 * 3600):
            for key in r.scan_iter():
                if key != CLAIM.encode():
                    r.delete(key)
            return db
    pytest.fail("no free Redis database (1-15) for this run: another run holds each")


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
    # Ranked: its whole row and the references' column; the other uploads on its set
    # follow the ranking (services.pipeline.network_meet_peers), and then the column is full.
    references = [j for j, net in enumerate(matrix["networks"]) if net["is_reference"]]
    assert len(row) == n and all(0.0 <= v <= 1.0 for v in row + [matrix["matrix"][j][i] for j in references])
    matrix = d.wait_matrix_full("mini")
    i = [net["id"] for net in matrix["networks"]].index(network_id)
    assert all(0.0 <= row[i] <= 1.0 for row in matrix["matrix"])
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
    status, body = d.upload(_token(d, "bob"), zip_folder(tiny_cnn_dir), "tiny-pg", benchmark="mini")
    assert status == 202, body
    _check_ranked(d, body["id"])


DUPLICATES = (
    "from evaluator.models import Evaluation, AdversarialDataset;"
    "from django.db.models import Count;"
    "dup = Evaluation.objects.values('network_id', 'kind', 'source_id').annotate(c=Count('id')).filter(c__gt=1).count();"
    "adv = AdversarialDataset.objects.values('network_id').annotate(c=Count('id')).filter(c__gt=1).count();"
    "print(dup, adv, Evaluation.objects.count())"
)


def _no_duplicates(d: Deployment) -> int:
    dup, adv, total = map(int, d.manage("shell", "-c", DUPLICATES).stdout.split()[-3:])
    assert dup == 0 and adv == 0
    return total


@pytest.mark.parametrize("which", ["sqlite_deployment", "postgres_deployment"])
def test_ten_concurrent_uploads_all_ranked_matrix_complete(which, request, mini_benchmark, tiny_cnn_dir) -> None:
    # mini_benchmark by name (the deployment is looked up below): built before the test
    # starts and its rows back if a flushing test ran first (tests/conftest.py).
    d: Deployment = request.getfixturevalue(which)
    while len(d.workers) < 2:
        d.start_worker()
    token = _token(d, f"crowd-{which[:6]}")
    # Ten different models (the same one ten times would be answered as a duplicate).
    archives = [zip_folder(tiny_cnn_dir) for _ in range(10)]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda i: d.upload(token, archives[i], f"crowd-{i}", benchmark="mini"), range(10)))
    assert all(status == 202 for status, _ in replies), replies
    ids = [body["id"] for _, body in replies]
    for network_id in ids:
        assert d.wait_finished(network_id)["status"] == "ranked"
    # Ranked before every other upload met its set (those cells come right after each
    # ranking, services.pipeline.network_meet_peers): wait for the matrix to fill.
    matrix = d.wait_matrix_full("mini")
    assert all(v is not None for row in matrix["matrix"] for v in row), matrix["matrix"]
    in_matrix = {n["id"] for n in matrix["networks"]}
    assert set(ids) <= in_matrix
    n = len(in_matrix)
    # Every ordered pair among the ranked networks is stored exactly once: N*(N-1)
    # adversarial evaluations plus clean, universal and its own universal for each.
    total = _no_duplicates(d)
    _, leaderboard = d.request("GET", "/api/leaderboard?benchmark=mini")
    unranked = [r for r in leaderboard["networks"] if r["status"] != "ranked"]
    assert not unranked, unranked
    assert total == n * (n - 1) + 3 * n


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
    _no_duplicates(d)
    assert data["status"] == "ranked"


def test_browser_user_uploads_watches_progress_sees_ranked_then_deletes(
    sqlite_deployment, tiny_cnn_dir, tmp_path
) -> None:
    """The whole user story in Debian's chromium, against the real deployment."""
    from tests.test_browser import ARGS, CHROMIUM

    need(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    d = sqlite_deployment
    d.manage("shell", "-c", "from django.contrib.auth.models import User;"
             "User.objects.create_user('dora', password='pw-dora-12345')")
    archive = tmp_path / "model.zip"
    archive.write_bytes(zip_folder(tiny_cnn_dir))
    hosts: set[str] = set()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page()
        page.on("request", lambda r: hosts.add(r.url.split("/")[2]) if "://" in r.url else None)
        page.goto(d.base_url + "/accounts/login/")
        page.fill("#id_username", "dora")
        page.fill("#id_password", "pw-dora-12345")
        page.click("form button[type=submit]")
        page.goto(d.base_url + "/networks/upload/")
        page.fill("#id_name", "browser-upload")
        page.set_input_files("#id_archive", str(archive))
        page.click("#upload-form button[type=submit]")
        page.wait_for_url("**/networks/*/")
        network_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
        # The live progress view is on screen while the pipeline runs...
        assert page.locator("#live-bar").count() == 1
        seen = {page.inner_text("#live-status")}
        # ...and the page reloads itself once the network is ranked.
        page.wait_for_selector("#level", timeout=600_000)
        assert page.inner_text("#status-badge").strip() == "ranked"
        assert page.inner_text("#level").strip().isdigit()
        assert seen & {"queued", "validating", "evaluating", "attacking", "cross-evaluating"}
        page.click("text=Delete…")
        page.click("#confirm-delete")
        page.wait_for_url(lambda url: f"/networks/{network_id}/" not in url)
        browser.close()
    status, _ = d.request("GET", f"/api/networks/{network_id}")
    assert status == 404
    assert hosts == {f"127.0.0.1:{d.port}"}
