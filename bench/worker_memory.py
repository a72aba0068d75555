"""Worker memory: peak RSS per job kind, and the Celery worker's own RSS.

    .venv/bin/python -m bench.worker_memory                      # mini benchmark (built once, cached)
    VAR_DIR=/path/to/built/var .venv/bin/python -m bench.worker_memory --benchmark mnist-5k

Per job kind: Job.peak_rss_mb as the sandbox records it (the whole child process tree,
polled from /proc every 0.2 s, plus the child's own ru_maxrss), over every job of the
build (build-reference, universal, validate and evaluate of the references) and of
one upload (one evaluate job) run through a real deployment (web + one Celery worker, solo pool) on a
private copy. While that upload runs, the worker's main process (which never imports
TensorFlow) and the web server are sampled from /proc (VmRSS; VmHWM = its peak).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench import _common as c


def spare_rss_mb(work: Path, worker_pid: int, timeout: float = 60.0) -> float | None:
    """RSS of the worker's spare child once it is ready (it starts after each job)."""
    end = time.time() + timeout
    while time.time() < end and not list(work.glob("jobs/spare-*/.sandbox/ready")):
        time.sleep(0.2)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == worker_pid:  # ppid: the worker's only long-lived child is its spare
            return c.proc_rss_mb(int(stat.parent.name))[0]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default="mini")
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached mini benchmark")
    args = parser.parse_args()
    c.header("worker memory per job kind", "python -m bench.worker_memory " + " ".join(sys.argv[1:]))
    if args.benchmark == "mini":
        source, _ = c.mini_template(fresh=args.fresh)
    else:
        if not os.getenv("VAR_DIR"):
            raise SystemExit("--benchmark other than mini needs VAR_DIR pointing to a built VAR_DIR")
        source = Path(os.environ["VAR_DIR"]).resolve()
    work = c.copy_var(source, c.CACHE / f"memory-run-{args.benchmark}")

    d = c.deployment(work)
    d.manage("migrate")
    token = d.manage("create_token", "bench", "--create").stdout.strip().splitlines()[-1]
    archive = c.zip_folder(c.tiny_cnn_dir())
    d.start_web()
    worker = d.start_worker()
    samples: list[tuple[float, float, float]] = []  # (t, worker rss, web rss)
    try:
        time.sleep(5.0)
        idle_worker = c.proc_rss_mb(worker.pid)[0]
        idle_web = c.proc_rss_mb(d.web.pid)[0]
        status, body = d.upload(token, archive, "tiny-memory", benchmark=args.benchmark)
        assert status == 202, body
        t0 = time.time()
        while True:
            samples.append((time.time() - t0, c.proc_rss_mb(worker.pid)[0], c.proc_rss_mb(d.web.pid)[0]))
            _, data = d.request("GET", f"/api/networks/{body['id']}")
            if data["status"] in ("ranked", "rejected", "failed"):
                break
            if time.time() - t0 > 1800:
                raise SystemExit("upload did not finish in 30 min")
            time.sleep(0.2)
        assert data["status"] == "ranked", data
        worker_hwm = c.proc_rss_mb(worker.pid)[1]
        web_hwm = c.proc_rss_mb(d.web.pid)[1]
        spare_mb = spare_rss_mb(work, worker.pid)
    finally:
        d.stop()

    c.django_setup(work)
    from django.db.models import Count, Max, Min

    from evaluator.models import Job

    print(f"benchmark {args.benchmark}: jobs of its build + one upload (the tests' tiny CNN)\n")
    rows = []
    order = ["build-reference", "universal", "evaluate", "validate", "attack", "cross"]
    for kind in order:
        qs = Job.objects.filter(kind=kind, peak_rss_mb__isnull=False)
        agg = qs.aggregate(n=Count("id"), lo=Min("peak_rss_mb"), hi=Max("peak_rss_mb"))
        if not agg["n"]:
            rows.append((kind, 0, None, None, None, None))
            continue
        peaks = list(qs.values_list("peak_rss_mb", flat=True))
        upload = qs.filter(network_id=body["id"]).values_list("peak_rss_mb", flat=True).first()
        worst = qs.order_by("-peak_rss_mb").select_related("network").first()
        rows.append((kind, agg["n"], c.median(peaks), agg["hi"], upload,
                     worst.network.name if worst.network else "—"))
    print(c.table(rows, ["job kind (sandbox child tree)", "jobs", "median peak MB", "max peak MB",
                         "the upload's MB", "max is"]))
    print()
    print(c.table([
        ("Celery worker main process (solo pool)", idle_worker, max(s[1] for s in samples), worker_hwm),
        ("web server (waitress, 8 threads)", idle_web, max(s[2] for s in samples), web_hwm),
    ], ["process", "idle RSS MB", "max RSS sampled during the upload MB", "VmHWM MB"]))
    if spare_mb is not None:
        print(f"\nthe worker's spare sandbox child (SANDBOX_SPARE, TensorFlow imported, waiting for the next "
              f"job): {spare_mb:.0f} MB RSS while idle")
    print(f"\n{len(samples)} samples over {samples[-1][0]:.0f} s; the worker's RSS does not include its sandbox "
          f"children (separate processes, counted per job above)")


if __name__ == "__main__":
    main()
