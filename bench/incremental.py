"""Incremental cost: wall time and evaluation count for adding the N-th network.

    .venv/bin/python -m bench.incremental [--points 5,10,20,30,50]

On a private copy of the mini benchmark (3 references, 200 eval images, 20 attack steps;
built once and cached by bench/_common.py), in-process services: each measured point
registers the tests' tiny CNN and runs what a worker runs for an upload
(network_evaluate: validate + attack + its row in one sandbox job, the references'
column in one more child, then benchmark_rank), with each phase's seconds from the
job's timings (evaluator.selectors); then, timed apart, the follow-up a worker queues
after the ranking (network_meet_peers: every earlier upload on the new set, each in
a child of its own, and the ranking again).

Between points the suite is filled up to N - 1 networks with database clones of one
pipeline-evaluated tiny CNN (same SavedModel folder, same adversarial set, every pair's
evaluation copied from the real one: the models are identical, so the copied numbers
are the ones a real run would compute). The N-th network then really loads and runs
all N - 1 peers. Expected: 3 + 2 (N - 1) evaluations (clean, universal, the universal
perturbations fitted on itself, its row and its column), upload → ranked flat in the
number of uploads, and the follow-up linear in it.
"""

from __future__ import annotations

import argparse
import sys
import time

from bench import _common as c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", default="5,10,20,30,40,50", help="values of N to measure")
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached mini benchmark")
    args = parser.parse_args()
    points = sorted(int(p) for p in args.points.split(","))

    c.header("incremental cost of the N-th network", "python -m bench.incremental " + " ".join(sys.argv[1:]))
    template, _ = c.mini_template(fresh=args.fresh)
    work = c.copy_var(template, c.CACHE / "incremental-run")
    tiny = c.tiny_cnn_dir()
    c.django_setup(work, UPLOADS_PER_HOUR="100000")

    from evaluator.models import AdversarialDataset, AuditResult, Evaluation, Job
    from evaluator.selectors import network_job_timings
    from evaluator.services import pipeline
    from evaluator.services.ranking import benchmark_rank
    from leaderboard import services
    from leaderboard.models import Benchmark, Network

    bench = Benchmark.objects.get(name="mini")
    S = Network.Status

    def members() -> list[Network]:
        return list(Network.objects.filter(benchmark=bench, adversarial__isnull=False)
                    .exclude(status__in=[S.REJECTED, S.FAILED]).order_by("pk"))

    def add_real(name: str) -> dict:
        net = services.network_register_path(benchmark=bench, path=tiny, name=name, enqueue=False)
        evals0, jobs0 = Evaluation.objects.count(), Job.objects.count()
        start = time.perf_counter()
        if not pipeline.network_evaluate(network=net):  # what a worker runs for an upload
            net.refresh_from_db()
            raise SystemExit(f"{name} ended {net.status}: {net.reason}")
        evaluated = time.perf_counter()
        benchmark_rank(benchmark=bench)
        ranked = time.perf_counter()
        times = {"rank": ranked - evaluated, "total": ranked - start}
        net.refresh_from_db()
        assert net.status == S.RANKED, (net.status, net.reason)
        # After its ranking, what the worker's follow-up task runs: every earlier upload
        # on its set, each in its own child, then the ranking again.
        if pipeline.network_meet_peers(network=net):
            benchmark_rank(benchmark=bench)
        times["after"] = time.perf_counter() - ranked
        (job,) = network_job_timings(network=net)  # validate + attack + its row: one job
        times.update(job.phases)
        times["sandbox"] = job.sandbox_seconds
        times["evaluations"] = Evaluation.objects.count() - evals0
        times["jobs"] = Job.objects.count() - jobs0
        # The N-dependent work, timed inside the child per pair (row: read adv set + predict;
        # column: load the peer + predict): free of the per-job TensorFlow import.
        times["pairs"] = sum(Evaluation.objects.filter(network=net, source__isnull=False).values_list("seconds", flat=True)) \
            + sum(Evaluation.objects.filter(source=net).values_list("seconds", flat=True))
        return {"net": net, **times}

    def clone(seed: Network, k: int) -> None:
        """A database copy of the seed tiny CNN, with every pair against current members."""
        peers = members()
        twin = Network.objects.create(
            benchmark=bench, name=f"clone-{k}", archive=seed.archive, archive_bytes=seed.archive_bytes,
            status=S.RANKED, progress=100, info=seed.info, flags=seed.flags,
            # The same verified files: a peer's model is checked against this manifest
            # before every load (issue 11), so a clone without it fails as "changed".
            model_files=seed.model_files,
            **{f: getattr(seed, f) for f in (
                "clean_accuracy", "clean_low", "clean_high", "universal_accuracy", "universal_low",
                "universal_high", "whitebox_accuracy", "whitebox_low", "whitebox_high", "attack_success")},
        )
        audit = seed.audit
        AuditResult.objects.create(
            network=twin, **{f: getattr(audit, f) for f in (
                "epsilon", "steps", "restarts", "eot_samples", "correct", "total", "accuracy", "low", "high",
                "curve", "predictions", "seconds")},
        )
        sa = seed.adversarial
        AdversarialDataset.objects.create(
            network=twin, file=sa.file, epsilon=sa.epsilon, step=sa.step, steps=sa.steps,
            success_rate=sa.success_rate, whitebox_correct=sa.whitebox_correct, total=sa.total,
            vanished_fraction=sa.vanished_fraction, seconds=sa.seconds, predictions=sa.predictions,
        )
        own = {e.kind: e for e in Evaluation.objects.filter(network=seed, source__isnull=True)}
        row = {e.source_id: e for e in Evaluation.objects.filter(network=seed, source__isnull=False)}
        col = {e.network_id: e for e in Evaluation.objects.filter(source=seed)}
        # Every non-reference network is the same tiny CNN: one on another's attack scores
        # exactly what the seed scores on its own attack (its white-box predictions).
        same = _whitebox(seed)

        def copy(e: Evaluation, network: Network, source: Network | None) -> Evaluation:
            return Evaluation(network=network, source=source, kind=e.kind, correct=e.correct, total=e.total,
                              accuracy=e.accuracy, low=e.low, high=e.high, confusion=e.confusion,
                              predictions=e.predictions, seconds=e.seconds)

        new = [copy(e, twin, None) for e in own.values()]
        for p in peers:
            new.append(copy(row[p.pk] if p.is_reference else same, twin, p))
            new.append(copy(col[p.pk] if p.is_reference else same, p, twin))
        Evaluation.objects.bulk_create(new)

    rows = []
    count = len(members())
    seed = None
    k = 0
    for n in points:
        if n <= count:
            raise SystemExit(f"N={n} is not above the {count} networks already there")
        if seed is None:
            # The first real tiny CNN is the clone template (it counts as a network).
            first = add_real("tiny-seed")
            seed = Network.objects.select_related("adversarial", "benchmark").get(pk=first["net"].pk)
            count += 1
        while count < n - 1:
            k += 1
            clone(seed, k)
            count += 1
        result = add_real(f"tiny-{n}")
        count += 1
        assert count == n
        rows.append((n, result["total"], result["after"], result["validation"], result["attack"], result["cross"],
                     result["sandbox"], result["pairs"], result["rank"],
                     result["evaluations"], 3 + 2 * (n - 1), result["jobs"]))
        print(f"N={n}: ranked after {result['total']:.1f} s, its column of uploads {result['after']:.1f} s more,"
              f" {result['evaluations']} evaluations", flush=True)

    print()
    print(c.table(rows, ["N", "to ranked s", "uploads' column after s", "validate s", "attack s", "cross s",
                         "job sandbox s", "pair work s", "rank s", "evaluations", "expected 2N+1", "jobs"]))
    ns = [r[0] for r in rows]
    print()
    print("to ranked = network_evaluate + benchmark_rank (what upload → ranked waits for); uploads' column after ="
          " the follow-up (network_meet_peers: each earlier upload on its set in a child of its own, then the"
          " ranking again); pair work = sum over the N-1 pairs of the in-child seconds")
    for label, col in (("to ranked", 1), ("column after", 2), ("cross-evaluation", 5), ("pair work", 7),
                       ("rank", 8), ("evaluations", 9)):
        slope, intercept, r2 = c.fit_line(ns, [r[col] for r in rows])
        print(f"{label:>17}: {slope:.4f} per extra network, intercept {intercept:.2f}, R² = {r2:.4f}")


def _whitebox(seed):
    """An unsaved Evaluation holding the seed's predictions on its own attack."""
    import numpy as np

    from evaluator.engine import metrics
    from evaluator.models import Evaluation
    from evaluator.services import storage

    labels = storage.eval_labels(seed.benchmark.data_file)
    preds = seed.adversarial.prediction_array()
    acc = metrics.accuracy(preds, labels)
    return Evaluation(kind=Evaluation.Kind.ADVERSARIAL, correct=acc.correct, total=acc.total,
                      accuracy=acc.value, low=acc.low, high=acc.high,
                      confusion=metrics.confusion_matrix(labels, preds, seed.benchmark.num_classes).tolist(),
                      predictions=storage.pack_predictions(np.asarray(preds)), seconds=0.0)


if __name__ == "__main__":
    main()
