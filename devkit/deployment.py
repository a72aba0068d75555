"""A real deployment in subprocesses: web server, Celery worker(s), own database.

End-to-end and fault tests (tests/test_e2e.py) and the service benches (bench/) drive it
over HTTP exactly as a user would, on the embedded default (file SQLite + filesystem
broker) or, under CI, on PostgreSQL + Redis. Nothing here runs in eager mode.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluator.engine.archive import pack_folder

ROOT = Path(__file__).resolve().parent.parent
PG_URL = "postgres://postgres@127.0.0.1:5432/"
REDIS_URL = "redis://127.0.0.1:6379/"


def zip_folder(folder: Path, prefix: str = "exported", unique: bool = True) -> bytes:
    """A SavedModel folder as the .zip a user would upload (model one folder deep).

    unique: add assets/upload-nonce.txt with random bytes, so every call is another
    model; the same model files uploaded twice are answered as a duplicate (issue 14).
    """
    buf = io.BytesIO()
    pack_folder(folder, buf, prefix=prefix, extra={"assets/upload-nonce.txt": os.urandom(16).hex()} if unique else None)
    return buf.getvalue()


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_postgres_database() -> str:
    """A fresh PostgreSQL database; returns its URL."""
    import psycopg

    name = f"ladder_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_URL + name


def drop_postgres_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Deployment:
    var_dir: Path
    database_url: str
    broker_url: str = "filesystem://"
    port: int = field(default_factory=free_port)
    web: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    started: int = 0  # workers ever started: names stay unique after a kill

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CELERY_"))}
        env.update(
            VAR_DIR=str(self.var_dir),
            DATABASE_URL=self.database_url,
            CELERY_BROKER_URL=self.broker_url,
            TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONUNBUFFERED="1",
            DJANGO_SETTINGS_MODULE="leaderboard.settings",
            # Keep hostile-model tests quick: the limits an operator would set lower.
            SANDBOX_TIMEOUT_S=os.getenv("E2E_SANDBOX_TIMEOUT_S", "240"),
            SANDBOX_MEMORY_MB=os.getenv("E2E_SANDBOX_MEMORY_MB", "3072"),
        )
        return env

    def manage(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env,
            capture_output=True, text=True, timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def _log(self, name: str):
        self.var_dir.mkdir(parents=True, exist_ok=True)
        return open(self.var_dir / f"{name}.log", "ab")

    def start_web(self) -> None:
        self.web = subprocess.Popen(
            [sys.executable, "manage.py", "run", "--no-worker", "--no-build", "--port", str(self.port)],
            cwd=ROOT, env=self.env, stdout=self._log("web"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", self.port):
            if self.web.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("web server did not start:\n" + self.read_log("web"))
            time.sleep(0.2)

    def start_worker(self, name: str | None = None) -> subprocess.Popen:
        self.started += 1
        name = name or f"w{self.started}"
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "leaderboard", "worker", "--pool", "prefork",
             "--concurrency", "1", "-n", f"{name}@%h", "--loglevel", "INFO"],
            cwd=ROOT, env=self.env, stdout=self._log(name), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(worker)
        return worker

    def kill_worker(self, worker: subprocess.Popen) -> None:
        """kill -9 the worker and everything it started (its sandbox children too)."""
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        worker.wait(timeout=30)

    def read_log(self, name: str) -> str:
        path = self.var_dir / f"{name}.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def stop(self) -> None:
        for proc in [*self.workers, self.web]:
            if proc is not None and proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=15)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        self.workers.clear()
        self.web = None

    # ---------------------------------------------------------------- HTTP

    def request(self, method: str, path: str, *, data: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                body = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read(), exc.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def upload(self, token: str, archive: bytes, name: str, *, benchmark: str, filename: str = "model.zip",
               extra: dict[str, str] | None = None) -> tuple[int, Any]:
        boundary = uuid.uuid4().hex
        fields = {"name": name, "benchmark": benchmark, **(extra or {})}
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items()
        ]
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode() + archive + b"\r\n"
        )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request("POST", "/api/networks", data=body, headers={
            "Authorization": f"Token {token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        })

    def wait_matrix_full(self, benchmark: str, *, timeout: float = 600, poll_s: float = 1.0) -> dict:
        """GET /api/matrix until no cell is null: the uploads' cells on a newer upload's
        set come after its ranking (services.pipeline.network_meet_peers)."""
        deadline = time.monotonic() + timeout
        while True:
            _, matrix = self.request("GET", f"/api/matrix?benchmark={benchmark}")
            if all(v is not None for row in matrix["matrix"] for v in row) or time.monotonic() > deadline:
                return matrix
            time.sleep(poll_s)

    def wait_finished(self, network_id: int, *, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        data: Any = None
        while time.monotonic() < deadline:
            status, data = self.request("GET", f"/api/networks/{network_id}")
            if status == 200 and data["status"] in ("ranked", "rejected", "failed"):
                return data
            time.sleep(1.0)
        logs = "\n".join(self.read_log(f"w{i}") for i in range(1, self.started + 1))
        raise AssertionError(f"network {network_id} not finished in {timeout}s: {data}\n{logs}")
