"""Web layer with 1,000 networks: SQL queries per request, p50/p95 latency under load.

    .venv/bin/python -m bench.web_load [--networks 1000] [--duration 8] [--connections 4] [--rounds 2]

1. A fresh VAR_DIR with a file SQLite database (what `manage.py run` uses). devkit/fakes.py's
   fake_suite stores 10 references and 2 uploads with every pair of the matrix (no
   TensorFlow); the queries per request are counted in-process (Django test client +
   CaptureQueriesContext). Then uploads are bulk-added up to --networks, each with its
   clean/universal evaluations, adversarial set row and its row and column against every
   reference; the two pages under test (one reference, one upload) get their full row and
   column against all networks, as the product stores them. Queries are counted again.
2. The real web server (`manage.py run --no-worker --no-build`: waitress, 8 threads) is
   started on that database and loaded from a second process: wrk (apt-get install wrk),
   or a Python thread pool when wrk is missing, --connections concurrent connections for
   --duration seconds per URL, interleaved with the trivial /healthz view as the reference,
   --rounds times; the medians over rounds of p50 and p95 are reported with their ratio to
   /healthz.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.request

from bench import _common as c

LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"p50": %d, "p95": %d, "p99": %d, "requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d}\\n',
    latency:percentile(50), latency:percentile(95), latency:percentile(99), summary.requests,
    summary.duration, e.connect + e.read + e.write + e.timeout, e.status))
end
"""

PYLOAD = r"""
import http.client, json, sys, threading, time
host, port, path, conns, duration = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
lat, errors, stop = [], [0], time.monotonic() + duration
def worker():
    conn = http.client.HTTPConnection(host, port, timeout=60)
    while time.monotonic() < stop:
        t = time.perf_counter()
        try:
            conn.request("GET", path); r = conn.getresponse(); r.read()
            if r.status != 200: errors[0] += 1
        except Exception:
            errors[0] += 1; conn = http.client.HTTPConnection(host, port, timeout=60); continue
        lat.append(time.perf_counter() - t)
threads = [threading.Thread(target=worker) for _ in range(conns)]
start = time.monotonic(); [t.start() for t in threads]; [t.join() for t in threads]
lat.sort(); pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e6
print("WRKJSON " + json.dumps({"p50": pick(.5), "p95": pick(.95), "p99": pick(.99), "requests": len(lat),
      "duration_us": (time.monotonic() - start) * 1e6, "errors": errors[0], "non2xx": 0}))
"""


def populate_rest(total: int, targets: list, user) -> None:
    """Bulk-add uploads up to `total` networks (see the module docstring)."""
    import numpy as np

    from evaluator.engine import metrics
    from evaluator.models import AdversarialDataset, Evaluation
    from evaluator.services import storage
    from leaderboard.models import Benchmark, Network
    from devkit import fakes

    bench = Benchmark.objects.get(name="mnist-5k")
    labels = storage.eval_labels(bench.data_file)
    refs = list(Network.objects.filter(benchmark=bench, is_reference=True).order_by("pk"))
    ref_strength = {r.pk: r.params["strength"] for r in refs}
    ladder = sorted(refs, key=lambda r: ref_strength[r.pk])
    have = Network.objects.filter(benchmark=bench).count()
    rng = np.random.default_rng(7)
    shared = storage.network_dir(0) / "adversarial.npz"
    np.savez(shared, adversarial=np.zeros((len(labels), 8, 8, 1), np.float32))

    def evaluation(network, source, kind, accuracy):
        preds = fakes._predictions(labels, accuracy, rng)
        acc = metrics.accuracy(preds, labels)
        return Evaluation(network=network, source=source, kind=kind, correct=acc.correct, total=acc.total,
                          accuracy=acc.value, low=acc.low, high=acc.high,
                          confusion=metrics.confusion_matrix(labels, preds, fakes.CLASSES).tolist(),
                          predictions=storage.pack_predictions(preds))

    batch = 200
    for start in range(have, total, batch):
        nets = []
        for i in range(start, min(total, start + batch)):
            s = float(rng.random())
            level = 0
            for r in ladder:
                if s > ref_strength[r.pk]:
                    level += 1
                else:
                    break
            private = i % 7 == 0
            nets.append(Network(
                benchmark=bench, name=f"bulk-{i}", owner=user if private or i % 3 == 0 else None,
                is_public=not private, status=Network.Status.RANKED, progress=100, stage="ranked",
                info={"model_dir": "none", "deterministic": True}, params={"strength": s},
                clean_accuracy=0.95, clean_low=0.92, clean_high=0.97,
                universal_accuracy=0.5 + 0.4 * s, universal_low=0.45 + 0.4 * s, universal_high=0.55 + 0.4 * s,
                whitebox_accuracy=0.8 * s, whitebox_low=max(0.0, 0.8 * s - 0.05), whitebox_high=0.8 * s + 0.05,
                attack_success=1 - s, level=level, score=float(np.log(s / (1 - s))),
                deciding_rung=min(level + 1, len(ladder)), archive_bytes=500_000,
            ))
        nets = Network.objects.bulk_create(nets)
        advs, evals = [], []
        for net in nets:
            s = net.params["strength"]
            own = fakes._predictions(labels, 0.8 * s, rng)
            advs.append(AdversarialDataset(
                network=net, file=storage.relative(shared), epsilon=0.3, step=0.01, steps=40,
                success_rate=1 - s, whitebox_correct=int((own == labels).sum()), total=len(labels),
                vanished_fraction=0.0, seconds=1.0, predictions=storage.pack_predictions(own)))
            evals.append(evaluation(net, None, Evaluation.Kind.CLEAN, 0.95))
            evals.append(evaluation(net, None, Evaluation.Kind.UNIVERSAL, 0.5 + 0.4 * s))
            for r in refs:
                rs = ref_strength[r.pk]
                evals.append(evaluation(net, r, Evaluation.Kind.ADVERSARIAL, 0.5 + 0.45 * (s - rs)))
                evals.append(evaluation(r, net, Evaluation.Kind.ADVERSARIAL, 0.5 + 0.45 * (rs - s)))
            for t in targets:
                if t.is_reference:
                    continue  # done above
                ts = t.params["strength"]
                evals.append(evaluation(net, t, Evaluation.Kind.ADVERSARIAL, 0.5 + 0.45 * (s - ts)))
                evals.append(evaluation(t, net, Evaluation.Kind.ADVERSARIAL, 0.5 + 0.45 * (ts - s)))
        AdversarialDataset.objects.bulk_create(advs)
        Evaluation.objects.bulk_create(evals, batch_size=2000)
        print(f"  {start + len(nets)} networks", flush=True)


def count_queries(urls: list[str]) -> dict[str, tuple[int, int]]:
    """(queries, response bytes) per URL for an anonymous visitor, in-process."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    out = {}
    for url in urls:
        client.get(url)  # warm caches (labels, templates)
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        out[url] = (len(ctx.captured_queries), len(response.content))
    return out


def load(base: str, path: str, duration: float, connections: int, use_wrk: bool) -> dict:
    if use_wrk:
        script = c.CACHE / "report.lua"
        script.write_text(LUA)
        cmd = ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{max(1, round(duration))}s",
               "--timeout", "60s", "-s", str(script), base + path]
    else:
        host, port = base.split("//")[1].split(":")
        cmd = [c.PYTHON, "-c", PYLOAD, host, port, path, str(connections), str(duration)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    data = json.loads(line[len("WRKJSON "):])
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    return data


def matrix_growth(sizes: list[int]) -> None:
    """/api/matrix and /matrix/ read every pair of the matrix: time them at growing N
    (fake_suite's full matrix, in-process, median of 3 requests)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from devkit.fakes import fake_network, fake_suite

    suite = fake_suite(references=10, uploads=0)
    peers = list(suite.references)
    client = Client()
    rows = []
    for n in sizes:
        while len(peers) < n:
            j = len(peers)
            peers.append(fake_network(suite.benchmark, suite.labels, name=f"m-{j}", strength=(j % 10 + 0.5) / 10,
                                      peers=list(peers), seed=3000 + j))
        from evaluator.services.ranking import benchmark_rank

        t = time.perf_counter()
        benchmark_rank(benchmark=suite.benchmark)
        rank_s = time.perf_counter() - t
        row = [n, n * (n - 1), rank_s]
        for url in ("/api/matrix", "/matrix/"):
            times = []
            for _ in range(3):
                with CaptureQueriesContext(connection) as ctx:
                    t = time.perf_counter()
                    assert client.get(url).status_code == 200
                    times.append(time.perf_counter() - t)
            row += [c.median(times), len(ctx.captured_queries)]
        rows.append(row)
        print(f"  N={n} done", flush=True)
    print(c.table(rows, ["N", "pairs", "benchmark_rank s", "/api/matrix s", "queries", "/matrix/ s", "queries"]))
    if len(rows) > 1:
        import math

        a, b = rows[0], rows[-1]
        print(f"growth exponent of /api/matrix between N={a[0]} and N={b[0]}: "
              f"{math.log(b[3] / a[3]) / math.log(b[0] / a[0]):.2f} (2 = quadratic)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=8, help="seconds of load per URL per round")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--python-load", action="store_true", help="use the Python load generator even if wrk exists")
    parser.add_argument("--matrix-sizes", default="",
                        help="instead: time /api/matrix and /matrix/ on full matrices of these N, e.g. 25,50,100")
    args = parser.parse_args()
    c.header(f"web layer with {args.networks} networks" if not args.matrix_sizes else "matrix views vs N",
             "python -m bench.web_load " + " ".join(sys.argv[1:]))

    work = c.CACHE / ("web-run" if not args.matrix_sizes else "matrix-run")
    shutil.rmtree(work, ignore_errors=True)
    (work / "staticfiles").mkdir(parents=True)
    d = c.deployment(work)
    d.manage("migrate")
    # The pages name fingerprinted static files (a manifest storage): collected first, as
    # `manage.py run` does, or the in-process requests below fail on the missing manifest.
    d.manage("collectstatic", "--noinput", "--verbosity", "0")
    c.django_setup(work)
    if args.matrix_sizes:
        matrix_growth([int(x) for x in args.matrix_sizes.split(",")])
        return
    from django.contrib.auth.models import User

    from leaderboard.models import Network
    from devkit.fakes import fake_suite

    t = time.perf_counter()
    user = User.objects.create_user("alice", password="pw-alice-123")
    suite = fake_suite(references=10, uploads=2, owner=None)
    ref, upload = suite.references[0], suite.uploads[0]
    urls = {"leaderboard /": "/", "network page": f"/networks/{upload.pk}/",
            "reference page": f"/networks/{ref.pk}/", "API leaderboard": "/api/leaderboard",
            "API network": f"/api/networks/{upload.pk}", "trivial /healthz": "/healthz"}
    small_n = Network.objects.count()
    small = count_queries(list(urls.values()))
    populate_rest(args.networks, [ref, upload], user)
    large_n = Network.objects.count()
    large = count_queries(list(urls.values()))
    print(f"populated in {time.perf_counter() - t:.0f} s: {large_n} networks "
          f"({sum(1 for _ in Network.objects.filter(is_reference=True))} references)\n")
    print(c.table(
        [(name, small[u][0], large[u][0], "yes" if small[u][0] == large[u][0] else "NO",
          f"{small[u][1] / 1024:.0f}", f"{large[u][1] / 1024:.0f}") for name, u in urls.items()],
        ["URL", f"queries N={small_n}", f"queries N={large_n}", "constant", f"KB N={small_n}", f"KB N={large_n}"]))
    print()

    use_wrk = shutil.which("wrk") is not None and not args.python_load
    d.start_web()
    results: dict[str, list[dict]] = {name: [] for name in urls}
    try:
        for u in urls.values():  # warm the server's caches and templates
            urllib.request.urlopen(d.base_url + u, timeout=60).read()
        for rnd in range(args.rounds):
            names = [n for n in urls if n != "trivial /healthz"]
            if rnd % 2:
                names.reverse()
            for name in names:
                for which in ("trivial /healthz", name):
                    results[which].append(load(d.base_url, urls[which], args.duration, args.connections, use_wrk))
                    r = results[which][-1]
                    print(f"  round {rnd + 1} {which:<17} p50 {r['p50'] / 1000:7.1f} ms  p95 {r['p95'] / 1000:7.1f} ms  "
                          f"{r['rps']:6.1f} req/s  errors {r['errors'] + r['non2xx']}", flush=True)
    finally:
        d.stop()

    def med(name: str, key: str) -> float:
        return c.median([r[key] for r in results[name]])

    ref50, ref95 = med("trivial /healthz", "p50"), med("trivial /healthz", "p95")
    print()
    print(f"load: {'wrk' if use_wrk else 'Python thread pool'} from a second process, {args.connections} connections, "
          f"{args.duration:g} s per URL, {args.rounds} rounds interleaved with /healthz; medians over runs; "
          f"waitress 8 threads, file SQLite, N={large_n}")
    print(c.table(
        [(name, large[urls[name]][0], med(name, "p50") / 1000, med(name, "p95") / 1000,
          med(name, "p50") / ref50, med(name, "p95") / ref95, med(name, "rps"))
         for name in urls],
        ["URL", "queries", "p50 ms", "p95 ms", "p50 / healthz", "p95 / healthz", "req/s"]))


if __name__ == "__main__":
    main()
