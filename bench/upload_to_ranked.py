"""Upload → ranked: wall time per stage and the share that is TensorFlow compute.

    .venv/bin/python -m bench.upload_to_ranked                        # mini benchmark (built once, cached)
    VAR_DIR=/path/to/built/var .venv/bin/python -m bench.upload_to_ranked --benchmark mnist-5k

A real deployment in subprocesses (devkit/deployment.py: waitress web server + one Celery
worker, file SQLite, filesystem broker) on a private copy of a built VAR_DIR. The tests'
tiny CNN is uploaded over HTTP (POST /api/networks) and polled every 0.2 s until ranked.
Then the evaluate job's timings (evaluator.selectors: started/finished, the sandbox's own
seconds and each phase's seconds: validate, attack, audit and cross run in ONE sandbox
job) give the breakdown, and probes (bench/probes.py) run in the same sandbox measure what
is overhead (the audit phase, the network's own universal perturbations, is shown whole):

  process start    a sandbox job that does nothing
  TF import        a sandbox job that only imports TensorFlow (minus the above)
  model load       scan + load + trace of each model (probe job, same files)
  TF compute       attack loop (AdversarialDataset.seconds), clean/universal predicts
                   (probe job, same model and data), cross-evaluation predicts
                   (Evaluation.seconds minus the probe's peer load times)

Everything else (dataset reads, unpacking, writing arrays, job bookkeeping, database
writes, queue hand-offs between stages, ranking) is overhead too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import _common as c
from bench import probes


def run_deployment(work: Path, benchmark: str, poll_s: float, model: Path | None, uploads_before: int = 0) -> dict:
    d = c.deployment(work)
    d.manage("migrate")
    token = d.manage("create_token", "bench", "--create").stdout.strip().splitlines()[-1]
    if str(model) == "control":
        from django.db import connections

        from evaluator.selectors import reference_model_dir

        model = reference_model_dir(benchmark=benchmark, recipe="control")
        connections.close_all()  # the deployment owns the database from here
    archive = c.zip_folder(model or c.tiny_cnn_dir())
    d.start_web()
    d.start_worker()
    try:
        # Let the worker finish starting, and its spare sandbox child import TensorFlow
        # (what an idle worker has done before an upload arrives): not measured.
        time.sleep(3.0)
        end = time.time() + 60
        while os.environ.get("SANDBOX_SPARE") != "false" and time.time() < end \
                and not list(work.glob("jobs/spare-*/.sandbox/ready")):
            time.sleep(0.2)
        # A board with other uploads on it: each is one more sandbox child in a new
        # upload's column, after its ranking (not measured here, only waited for).
        for k in range(uploads_before):
            status, body = d.upload(token, c.zip_folder(c.tiny_cnn_dir()), f"earlier-{k}", benchmark=benchmark)
            if status != 202 or d.wait_finished(body["id"], timeout=1800)["status"] != "ranked":
                raise SystemExit(f"earlier upload {k} not ranked: {status} {body}")
        if uploads_before:
            d.wait_matrix_full(benchmark, timeout=1800)
            time.sleep(3.0)  # the worker's spares are ready again, as an idle worker's are
        t0 = time.time()
        status, body = d.upload(token, archive, "tiny-upload", benchmark=benchmark)
        t_accepted = time.time()
        if status != 202:
            raise SystemExit(f"upload refused: {status} {body}")
        nid = body["id"]
        seen: list[tuple[float, str]] = []
        deadline = time.time() + 1800
        while time.time() < deadline:
            _, data = d.request("GET", f"/api/networks/{nid}")
            if not seen or seen[-1][1] != data["status"]:
                seen.append((time.time() - t0, data["status"]))
            if data["status"] in ("ranked", "rejected", "failed"):
                break
            time.sleep(poll_s)
        t_done = time.time()
        if data["status"] != "ranked":
            raise SystemExit(f"network {nid} ended {data['status']}: {data.get('reason')}\n{d.read_log('w0')}")
        d.wait_matrix_full(benchmark, timeout=1800, poll_s=poll_s)
        t_full = time.time()
    finally:
        d.stop()
    return {"id": nid, "t0": t0, "accepted": t_accepted - t0, "client_total": t_done - t0, "seen": seen,
            "column_after": t_full - t_done}


def compare_spare_modes() -> None:
    """Run this bench twice in turn, spare on and off, and put the two side by side."""
    argv = [a for a in sys.argv[1:] if not a.startswith("--spare")]
    results = []
    for mode in ("on", "off"):
        out = subprocess.run([sys.executable, "-m", "bench.upload_to_ranked", *argv, "--spare", mode],
                             cwd=c.ROOT, capture_output=True, text=True, check=False)
        print(out.stdout, end="")
        if out.returncode:
            raise SystemExit(f"--spare {mode} failed:\n{out.stderr[-4000:]}")
        results.append(json.loads(out.stdout.rsplit("RESULT ", 1)[1].splitlines()[0]))
    print("side by side (same benchmark, same upload, one run after the other):")
    print(c.table([(f"spare {r['spare']}" + (" (job ran warm)" if r["warm"] else " (cold)"), r["total"],
                    r["compute"], r["overhead"], 100 * r["share"]) for r in results],
                  ["worker", "upload → ranked s", "TF compute s", "overhead s", "overhead %"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default="mini", help="mini (built here) or a benchmark built in $VAR_DIR")
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached mini benchmark")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each overhead probe (median)")
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--model", type=Path, default=None,
                        help="SavedModel folder to upload (default: the tests' tiny CNN); "
                             "'control' = a copy of the benchmark's control reference")
    parser.add_argument("--uploads-before", type=int, default=0,
                        help="upload this many tiny CNNs first (each ranked, and its column full) so the "
                             "measured upload meets a board with other uploads on it")
    parser.add_argument("--spare", choices=["on", "off", "both"], default="both",
                        help="worker with a spare sandbox child (TF imported before the upload; the "
                             "default deployment), without (every job starts cold), or both in turn")
    args = parser.parse_args()
    if args.spare == "both":
        return compare_spare_modes()
    os.environ["SANDBOX_SPARE"] = "true" if args.spare == "on" else "false"

    c.header("upload → ranked, per stage", "python -m bench.upload_to_ranked " + " ".join(sys.argv[1:]))
    if args.benchmark == "mini":
        source, built = c.mini_template(fresh=args.fresh)
        if built:
            print(f"(built the mini benchmark in {built:.0f} s)")
    else:
        if not os.getenv("VAR_DIR"):
            raise SystemExit("--benchmark other than mini needs VAR_DIR pointing to a built VAR_DIR")
        source = Path(os.environ["VAR_DIR"]).resolve()
    work = c.copy_var(source, c.CACHE / f"upload-run-{args.benchmark}")
    c.django_setup(work)  # this process reads the private copy; the deployment writes it
    # Overhead probes before and after the upload (the machine's load drifts): medians of both.
    noops, imports = [], []

    def probe_overheads() -> None:
        for _ in range(args.repeats):
            noops.append(c.sandbox(probes.probe_noop).seconds)
            imports.append(c.sandbox(probes.probe_import_tf))

    probe_overheads()
    run = run_deployment(work, args.benchmark, args.poll, args.model, args.uploads_before)

    from evaluator.models import AdversarialDataset, Evaluation, UniversalSet
    from evaluator.selectors import network_job_timings
    from evaluator.services import storage
    from evaluator.services.ranking import benchmark_rank
    from leaderboard.models import Network

    net = Network.objects.select_related("benchmark").get(pk=run["id"])
    bench = net.benchmark
    adv = AdversarialDataset.objects.get(network=net)
    universal = UniversalSet.objects.filter(benchmark=bench).first()
    rows = Evaluation.objects.filter(network=net, source__isnull=False)
    cols = Evaluation.objects.filter(source=net)
    peers = list(Network.objects.filter(benchmark=bench, adversarial__isnull=False).exclude(pk=net.pk))
    n_eval = len(storage.eval_labels(bench.data_file))
    print(f"benchmark {bench.name}: {n_eval} eval images, attack {bench.steps} steps; "
          f"{len(peers)} other networks ({sum(p.is_reference for p in peers)} references); "
          f"upload: {args.model or 'the tests tiny CNN'} ({net.archive_bytes / 1024:.0f} KB zip)")
    print("client saw: " + ", ".join(f"{s} @{t:.1f}s" for t, s in run["seen"]))
    print()

    # ---------------------------------------------------------------- probes (deployment stopped)
    probe_overheads()
    noop = c.median(noops)
    imp = imports
    import_wall = c.median([r.seconds for r in imp])
    probe = c.sandbox(probes.probe_model, {
        "model_dir": str(storage.media_path(net.info["model_dir"])),
        "dataset": str(storage.media_path(bench.data_file)),
        "universal": str(storage.media_path(universal.file)) if universal else None,
        "adversarial": str(storage.media_path(adv.file)),
        "peers": [str(storage.media_path(p.info["model_dir"])) for p in peers],
    }).value
    rank_s = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        benchmark_rank(benchmark=bench)
        rank_s.append(time.perf_counter() - t)
    rank_compute = c.median(rank_s)

    # ---------------------------------------------------------------- timeline
    created = net.created_at.timestamp()
    ranked = net.ranked_at.timestamp()
    job = network_job_timings(network=net)[0]  # validate + attack + audit + cross: one sandbox job
    sandbox_s = job.sandbox_seconds
    phase_s = job.phases
    # The first predict after loading retraces the graph for the full batch size: that
    # part is overhead (tracing), the second identical predict is the compute.
    trace = max(0.0, probe["predict_clean"] - probe["predict_clean_again"])
    compute = {
        "validation": probe["predict_clean_again"] + probe.get("predict_universal", 0.0),
        "attack": adv.seconds,
        # rows: the new network (traced already) on each peer's set; columns: each peer's
        # pure predict on ours (the probe's second call); the rest of a column is load + trace.
        "cross": sum(e.seconds for e in rows) + sum(probe["peer_predict"]),
    }
    col_overhead = sum(e.seconds for e in cols) - sum(probe["peer_predict"])
    loads = {"validation": probe["scan_load"] + trace, "attack": 0.0, "cross": col_overhead}
    reads = probe["import_engine"] + probe["load_dataset"]  # engine modules + dataset file
    # A warm job ran in the spare child, which had started and imported TF before the
    # upload; a cold one pays both, the import inside its validation phase (lazy import).
    warm = job.warm
    tf_import = 0.0 if warm else max(0.0, import_wall - noop)
    start = 0.0 if warm else noop
    loads["validation"] += tf_import
    gap = job.started_at.timestamp() - created
    table = [("upload saved → job starts (DB + queue)", gap, None, None, None, None)]
    for k in ("validation", "attack", "cross"):
        table.append((f"  {k} phase", None, phase_s.get(k), compute[k], loads[k],
                      phase_s.get(k, float("nan")) - loads[k] - compute[k]))
    # Phases the probes do not split (the audit: the network's own universal perturbations).
    unsplit = {k: seconds for k, seconds in phase_s.items() if k not in compute}
    for k, seconds in unsplit.items():
        table.append((f"  {k} phase (not split)", None, seconds, None, None, None))
    in_job_rest = sandbox_s - sum(phase_s.values())
    table.append(("  before the phases (process start, dataset read)", None, in_job_rest, None,
                  start, in_job_rest - start))
    table.append((f"evaluate job ({'warm spare child' if warm else 'cold child'})", job.seconds, sandbox_s,
                  sum(compute.values()), start + sum(loads.values()), None))
    tail = ranked - job.finished_at.timestamp()
    table.append(("job done → ranked (DB writes + queue + rank)", tail, None, None, None, None))
    total = ranked - created
    print(c.table(table, ["stage", "wall s", "sandbox s", "TF compute s", "start+import+load s", "other s"]))
    print()

    tf_compute = sum(compute.values())
    overhead = total - tf_compute
    own_loads = sum(loads.values()) - tf_import
    parts = [
        ("process start" + (" (done by the spare before the upload)" if warm else ""), start),
        ("TensorFlow import" + (" (done by the spare before the upload)" if warm else ""), tf_import),
        ("model scan + load + trace (own ×1, every peer ×1)", own_loads),
        ("engine import + dataset read", reads),
        *[(f"{k} phase, not split (compute and overhead)", seconds) for k, seconds in unsplit.items()],
        ("rest inside the job (unpack, write arrays; ± probe noise)",
         sandbox_s - start - tf_import - own_loads - tf_compute - reads - sum(unsplit.values())),
        ("job bookkeeping outside the sandbox (Job row, heartbeats, storing phases)",
         job.seconds - sandbox_s),
        ("upload saved → job starts: DB writes + queue hand-off", gap),
        ("after the job: DB writes + rank queue + rank", tail),
    ]
    print(c.table(
        [("TensorFlow compute (attack loop + predicts)", tf_compute, 100 * tf_compute / total)]
        + [(name, s, 100 * s / total) for name, s in parts]
        + [("total overhead", overhead, 100 * overhead / total), ("total: upload saved → ranked", total, 100.0)],
        ["where the time goes", "seconds", "% of total"]))
    print()
    print(f"client view: POST accepted in {run['accepted']:.2f} s; POST → API says ranked: {run['client_total']:.1f} s; "
          f"then the other uploads on its set (after the ranking, {args.uploads_before} earlier uploads): "
          f"{run['column_after']:.1f} s more")
    print(f"probes (median of {len(noops)}, half before and half after the upload): empty sandbox job {noop:.2f} s; job importing TF {import_wall:.2f} s; "
          f"in-child TF import {c.median([r.value['import_tf'] for r in imp]):.2f} s "
          f"(range {min(r.seconds for r in imp):.2f}-{max(r.seconds for r in imp):.2f} s)")
    print(f"probe: scan+load own model {probe['scan_load']:.2f} s; peers: load "
          f"{sum(probe['peer_loads']):.2f} s, first predict {sum(probe['peer_first_predict']):.2f} s, "
          f"predict {sum(probe['peer_predict']):.2f} s (sums over {len(peers)}); engine import {probe['import_engine']:.2f} s; "
          f"dataset read {probe['load_dataset']:.2f} s; predict clean {probe['predict_clean']:.3f} s "
          f"(again {probe['predict_clean_again']:.3f} s); universal {probe.get('predict_universal', 0):.3f} s; "
          f"one adversarial set {probe['predict_adversarial']:.3f} s")
    print(f"attack loop {adv.seconds:.2f} s; cross: {rows.count()} row + {cols.count()} column evaluations; "
          f"benchmark_rank in-process {rank_compute:.3f} s (median of {args.repeats})")
    print(f"overhead share: {100 * overhead / total:.0f}% (goal < 25%); "
          f"TF compute {tf_compute:.1f} s of {total:.1f} s")
    print("RESULT " + json.dumps({"spare": args.spare, "warm": warm, "total": total, "compute": tf_compute,
                                  "overhead": overhead, "share": overhead / total,
                                  "client_total": run["client_total"], "column_after": run["column_after"],
                                  "uploads_before": args.uploads_before}))


if __name__ == "__main__":
    main()
