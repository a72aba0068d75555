"""The whole pipeline in-process (engine work in real sandboxed children) on the
session's mini benchmark: stored numbers against direct recomputation, the `rank`
command on the two usual export styles, incremental cost, statuses, rejections."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.db.models.signals import post_save

from devkit.deployment import zip_folder
from evaluator.engine.datasets import load_dataset
from evaluator.models import AdversarialDataset, Evaluation, Job, UniversalSet
from evaluator.services import storage
from evaluator.services.pipeline import network_run_pipeline
from leaderboard import services
from leaderboard.models import Network

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

S = Network.Status


def _rank(path: Path, name: str, capsys, lines: list[str] | None = None) -> dict:
    try:
        call_command("rank", str(path), "--name", name, "--benchmark", "mini")
    except SystemExit as exc:
        assert exc.code != 0
    out = capsys.readouterr().out.strip().splitlines()
    if lines is not None:
        lines.extend(out)
    return json.loads(out[-1])


def test_mini_benchmark_matrix_matches_direct_recomputation(mini_benchmark) -> None:
    from evaluator.engine.network import load_network

    bench = mini_benchmark
    refs = list(Network.objects.filter(benchmark=bench, is_reference=True).select_related("adversarial"))
    assert {n.recipe for n in refs} == {"control", "down50", "adv-trained"}
    assert all(n.status == S.RANKED for n in refs)
    assert sorted(bench.ladder) == sorted(n.pk for n in refs)
    ds = load_dataset(storage.media_path(bench.data_file))
    loaded = {
        n.pk: load_network(storage.media_path(n.info["model_dir"]), expected_shape=ds.shape,
                           num_classes=ds.num_classes)
        for n in refs
    }
    for a in refs:
        clean = (loaded[a.pk].predict(ds.x_eval) == ds.y_eval).mean()
        assert a.clean_accuracy == pytest.approx(clean)
        for b in refs:
            if a.pk == b.pk:
                continue
            adv = np.load(storage.media_path(b.adversarial.file))["adversarial"]
            direct = (loaded[a.pk].predict(adv) == ds.y_eval).mean()
            assert Evaluation.objects.get(network=a, source=b).accuracy == pytest.approx(direct)
        # Every stored adversarial image stays inside the epsilon ball and [0, 1].
        adv = np.load(storage.media_path(a.adversarial.file))["adversarial"]
        assert np.abs(adv - ds.x_eval).max() <= bench.epsilon + 1e-5
        assert adv.min() >= 0.0 and adv.max() <= 1.0


def test_rank_command_on_keras_export(mini_benchmark, tiny_cnn_dir, capsys) -> None:
    out: list[str] = []
    result = _rank(tiny_cnn_dir, "keras-export", capsys, out)
    assert result["status"] == "ranked", result
    # Progress as it goes (issue 14): the page's statuses in the SPEC's order, the bar
    # never going back, peers named, not numbered.
    progress = [re.fullmatch(r"\[ *(\d+)%\] ([a-z-]+)(?:: (.*))?", line) for line in out]
    progress = [m for m in progress if m]
    percents = [int(m[1]) for m in progress]
    assert len(progress) >= 4 and percents == sorted(percents), out
    order = [S.VALIDATING, S.EVALUATING, S.ATTACKING, S.CROSS_EVALUATING]
    seen = [m[2] for m in progress]
    assert [s for s in order if s in seen] == [s for s in dict.fromkeys(seen) if s in order]
    assert {S.ATTACKING, S.CROSS_EVALUATING} <= set(seen)
    assert not any(re.search(r"network \d", m[3] or "") for m in progress), out  # names, never ids
    for key in ("id", "name", "status", "level", "score", "clean_accuracy", "universal_accuracy",
                "whitebox_accuracy", "flags"):
        assert key in result
    assert result["clean_accuracy"] > 0.7
    assert result["whitebox_accuracy"] < result["clean_accuracy"]
    assert isinstance(result["level"], int)


def test_rank_command_on_tf_module_with_custom_signature_and_probabilities(
    mini_benchmark, tiny_cnn, tmp_path, capsys
) -> None:
    import tensorflow as tf

    class Classifier(tf.Module):
        def __init__(self, model) -> None:
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)])
        def classify(self, images):
            return {"probabilities": tf.nn.softmax(self.model(images))}

    module = Classifier(tiny_cnn)
    tf.saved_model.save(module, str(tmp_path / "module"), signatures={"classify": module.classify})
    result = _rank(tmp_path / "module", "tf-module", capsys)
    assert result["status"] == "ranked", result
    assert "probabilities" in result["flags"]


def test_adding_networks_costs_2n_plus_3_evaluations_and_rewrites_nothing(
    mini_benchmark, tiny_cnn_dir
) -> None:
    bench = mini_benchmark
    for round_ in range(2):
        n = Network.objects.filter(benchmark=bench, status=S.RANKED).count()
        before = {e.pk: (e.accuracy, e.created_at, bytes(e.predictions)) for e in Evaluation.objects.all()}
        attacks_before = AdversarialDataset.objects.count()
        net = services.network_register_path(benchmark=bench, path=tiny_cnn_dir, name=f"inc-{round_}",
                                             enqueue=False)
        assert network_run_pipeline(network=net)
        after = {e.pk: (e.accuracy, e.created_at, bytes(e.predictions)) for e in Evaluation.objects.all()}
        # Its row and column, its clean, universal and own-universal evaluations.
        assert len(after) - len(before) == 2 * n + 3
        assert AdversarialDataset.objects.count() - attacks_before == 1
        assert all(after[pk] == value for pk, value in before.items())


def test_an_upload_is_ranked_before_the_other_uploads_meet_its_set(mini_benchmark, tiny_cnn_dir) -> None:
    """Upload → ranked waits for its row and the references' column only; then every
    uploaded peer meets its set, each alone in a child of its own, with the numbers a
    direct prediction gives (issue 11: one child per earlier upload no longer grows the
    path to a level)."""
    from evaluator.engine.network import load_network
    from evaluator.services import pipeline
    from evaluator.services.peers import matrix_missing, matrix_peers
    from evaluator.services.ranking import benchmark_rank

    bench = mini_benchmark
    first = services.network_register_path(benchmark=bench, path=tiny_cnn_dir, name="meet-first", enqueue=False)
    assert network_run_pipeline(network=first)
    new = services.network_register_path(benchmark=bench, path=tiny_cnn_dir, name="meet-new", enqueue=False)
    assert pipeline.network_evaluate(network=new)
    benchmark_rank(benchmark=bench)
    new.refresh_from_db()
    assert new.status == S.RANKED and new.level is not None
    uploads = sorted(p.pk for p in matrix_peers(new) if not p.is_reference)
    assert first.pk in uploads
    assert sorted(p.pk for p in matrix_missing(new, matrix_peers(new))[1]) == uploads  # references done

    jobs_before = set(Job.objects.values_list("pk", flat=True))
    assert pipeline.network_meet_peers(network=new) == len(uploads)
    assert matrix_missing(new, matrix_peers(new)) == ([], [])
    cross = Job.objects.exclude(pk__in=jobs_before).filter(kind=Job.Kind.CROSS)
    assert sorted(cross.values_list("network_id", flat=True)) == uploads  # one child per upload, its own job
    new.refresh_from_db()
    assert new.status == S.RANKED  # never moved back

    ds = load_dataset(storage.media_path(bench.data_file))
    with np.load(storage.media_path(new.adversarial.file)) as data:
        adversarial = data["adversarial"]
    model = load_network(storage.media_path(first.info["model_dir"]), expected_shape=ds.shape,
                         num_classes=ds.num_classes)
    cell = Evaluation.objects.get(network=first, source=new)
    assert cell.accuracy == pytest.approx((model.predict(adversarial) == ds.y_eval).mean())


SPEC_ORDER = [S.QUEUED, S.VALIDATING, S.EVALUATING, S.ATTACKING, S.CROSS_EVALUATING, S.RANKED]


def test_upload_is_one_job_whose_statuses_walk_in_order(mini_benchmark, tiny_cnn_dir, monkeypatch) -> None:
    """validate + attack + its row run as ONE sandbox job (TensorFlow imported once); the
    status still walks the SPEC's order, and the clean evaluation is stored as soon as
    the job reports the attack, not when the whole job ends."""
    from evaluator.services import jobs

    seen: list[str] = []
    clean_stored_when_attacking: list[bool] = []
    run = jobs.run_in_sandbox

    def note(status: str) -> None:
        if not seen or seen[-1] != status:
            seen.append(status)

    def record(sender, instance: Network, **kwargs) -> None:
        note(instance.status)

    def spying_run(target, kwargs, *, on_progress=None, **rest):
        def spy(fraction: float, text: str) -> None:
            on_progress(fraction, text)
            row = Network.objects.get(name="stages", benchmark=mini_benchmark)
            if row.status == S.ATTACKING and not clean_stored_when_attacking:
                clean_stored_when_attacking.append(row.evaluations.filter(kind="clean").exists())
            note(row.status)

        return run(target, kwargs, on_progress=spy if on_progress else None, **rest)

    monkeypatch.setattr(jobs, "run_in_sandbox", spying_run)
    post_save.connect(record, sender=Network)
    try:
        net = services.network_register_path(benchmark=mini_benchmark, path=tiny_cnn_dir, name="stages",
                                             enqueue=False)
        assert network_run_pipeline(network=net)
    finally:
        post_save.disconnect(record, sender=Network)
    net.refresh_from_db()
    note(net.status)  # the ranking writes it with a bulk update
    assert net.status == S.RANKED and net.progress == 100
    # Its own job, then one for its column (the three references together: trusted code),
    # then the detection and vector-space analysis of its set (issue 15).
    assert list(net.jobs.values_list("kind", "state")) == [(Job.Kind.ANALYSE, Job.State.DONE),
                                                           (Job.Kind.CROSS, Job.State.DONE),
                                                           (Job.Kind.EVALUATE, Job.State.DONE)]
    cross_log = net.jobs.get(kind=Job.Kind.CROSS).log.splitlines()[0]
    assert cross_log.endswith(f"on the adversarial set of stages (network {net.pk})")
    assert sorted(cross_log.split(" on the ")[0].split(", ")) == ["adv-trained", "control", "down50"]
    # In order, never backwards; the evaluating window is one predict long and may
    # fall between two of the worker's 0.2 s polls, the others may not.
    assert seen == sorted(seen, key=SPEC_ORDER.index), seen
    assert {S.QUEUED, S.VALIDATING, S.ATTACKING, S.CROSS_EVALUATING, S.RANKED} <= set(seen), seen
    assert clean_stored_when_attacking == [True]


def _zip(files: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    buf.seek(0)
    return buf


def _zip_folder(folder: Path) -> io.BytesIO:
    return io.BytesIO(zip_folder(folder, "m", unique=False))


def _wrong_shape_model(tmp_path: Path) -> Path:
    import keras

    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.export(str(tmp_path / "wrong"), verbose=False)
    return tmp_path / "wrong"


def _read_file_model(tmp_path: Path) -> Path:
    import tensorflow as tf

    class Sneaky(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)])
        def serve(self, x):
            secret = tf.strings.length(tf.io.read_file("/etc/hostname"))
            return tf.reshape(tf.reduce_mean(x, axis=[1, 2, 3]), [-1, 1]) * tf.ones([1, 10]) + tf.cast(secret, tf.float32)

    module = Sneaky()
    tf.saved_model.save(module, str(tmp_path / "sneaky"), signatures={"serving_default": module.serve})
    return tmp_path / "sneaky"


@pytest.mark.parametrize(
    "build, words",
    [
        (lambda tmp: _zip({"readme.txt": b"no model here"}), "no saved_model.pb"),
        (lambda tmp: _zip_folder(_wrong_shape_model(tmp)), "input shape"),
        (lambda tmp: _zip_folder(_read_file_model(tmp)), "ReadFile"),
    ],
    ids=["no-model", "wrong-shape", "read-file-op"],
)
def test_contract_breaches_end_rejected_with_reason(mini_benchmark, tmp_path, build, words) -> None:
    archive = build(tmp_path)
    net = services.network_upload(benchmark=mini_benchmark, owner=None, name="bad", archive=archive,
                                  enqueue=False)
    assert network_run_pipeline(network=net) is False
    net.refresh_from_db()
    assert net.status == S.REJECTED
    assert words in net.reason
    assert not Evaluation.objects.filter(network=net).exists()


def test_a_stored_attack_is_kept_when_only_the_validation_is_redone(mini_benchmark, tiny_cnn_dir, monkeypatch) -> None:
    """Validation missing (say, the universal set was rebuilt) but the attack stored: the
    one job validates again and reuses the stored adversarial set instead of attacking
    anew, so the file stays the one its evaluations were computed on."""
    from evaluator.services import pipeline

    net = services.network_register_path(benchmark=mini_benchmark, path=tiny_cnn_dir, name="keep-attack",
                                         enqueue=False)
    assert network_run_pipeline(network=net)
    adv = AdversarialDataset.objects.get(network=net)
    before = storage.media_path(adv.file).read_bytes()
    Evaluation.objects.filter(network=net, kind=Evaluation.Kind.CLEAN).delete()
    sent: list[dict] = []
    run = pipeline.job_run

    def spying_run(**kwargs):
        sent.append(kwargs["kwargs"])
        return run(**kwargs)

    monkeypatch.setattr(pipeline, "job_run", spying_run)
    net.refresh_from_db()
    assert pipeline.network_evaluate(network=net)
    assert len(sent) == 1 and "attack" not in sent[0] and sent[0]["validate"] is True
    assert storage.media_path(adv.file).read_bytes() == before
    assert Evaluation.objects.filter(network=net, kind=Evaluation.Kind.CLEAN).count() == 1


def test_the_audit_runs_in_the_same_job_and_robust_accuracy_is_recomputable(mini_benchmark, tiny_cnn_dir) -> None:
    """Issue 12: validate -> attack -> audit -> row in one job; the full determinism and
    noise checks recorded with the model's description; robust accuracy on the row is the
    worst case of every stored set (recomputable from the rows alone)."""
    from evaluator.models import AuditResult

    net = services.network_register_path(benchmark=mini_benchmark, path=tiny_cnn_dir, name="audited",
                                         enqueue=False)
    assert network_run_pipeline(network=net)
    net.refresh_from_db()
    labels = storage.eval_labels(mini_benchmark.data_file)
    audit = AuditResult.objects.get(network=net)
    assert audit.total == len(labels) and audit.epsilon == mini_benchmark.epsilon
    assert [p["epsilon"] for p in audit.curve] == pytest.approx([0.05, 0.1, 0.2, 0.3])
    checks = net.info["checks"]
    assert checks["disagreements"] == 0 and checks["compared"] == len(labels) and net.info["deterministic"]
    assert abs(checks["noise_clean_correct"] - checks["noise_noisy_correct"]) <= 3
    sets = [AdversarialDataset.objects.get(network=net).prediction_array() == labels,
            audit.prediction_array() == labels]
    sets += [e.prediction_array() == labels for e in Evaluation.objects.filter(network=net)]
    assert net.robust_accuracy == pytest.approx(np.logical_and.reduce(sets).mean())
    assert net.robust_accuracy <= min(net.whitebox_accuracy, audit.accuracy)
    assert net.audit_curve == audit.curve
    assert "audit" in net.jobs.get(kind=Job.Kind.EVALUATE).log
    # Issue 16: universal perturbations fitted on this network itself, stored like its
    # adversarial set, its accuracy on them one of the worst case's sets.
    own = Evaluation.objects.get(network=net, kind=Evaluation.Kind.UNIVERSAL_OWN, source__isnull=True)
    assert own.total == len(labels) and net.universal_own_accuracy == pytest.approx(own.correct / own.total)
    assert net.universal_own_low <= net.universal_own_accuracy <= net.universal_own_high
    assert net.robust_accuracy <= net.universal_own_accuracy
    with np.load(storage.network_dir(net.pk) / "universal-own.npz") as data:
        perturbations = data["perturbations"]
    assert perturbations.shape == (mini_benchmark.universal_count, 28, 28, 1)
    assert np.abs(perturbations).max() <= mini_benchmark.universal_xi + 1e-6
    control = UniversalSet.objects.get(benchmark=mini_benchmark)
    with np.load(storage.media_path(control.file)) as data:
        assert not np.array_equal(data["perturbations"], perturbations)  # fitted on it, not the control
    # The references were audited when the benchmark was built, and ranked on robust accuracy.
    for ref in Network.objects.filter(benchmark=mini_benchmark, is_reference=True):
        assert ref.robust_accuracy is not None and AuditResult.objects.filter(network=ref).exists()


def test_an_uploaded_copy_of_a_reference_gets_exactly_its_level(mini_benchmark, tmp_path, capsys) -> None:
    """Issue 16, one level scale: the model files of a reference, uploaded and ranked
    through the real `rank` command, tie with that reference on every image (the same
    secret targets, a deterministic attack) and get exactly its level, where a
    reference's own rung would have counted as a loss before."""
    import shutil

    ref = Network.objects.get(benchmark=mini_benchmark, recipe="down50")
    copy_dir = tmp_path / "down50-copy"
    shutil.copytree(storage.media_path(ref.info["model_dir"]), copy_dir)
    result = _rank(copy_dir, "down50-copy", capsys)
    ref.refresh_from_db()
    assert result["status"] == "ranked", result
    assert result["level"] == ref.level
    copy = Network.objects.get(pk=result["id"])
    rung = mini_benchmark.__class__.objects.get(pk=mini_benchmark.pk).ladder.index(ref.pk) + 1
    assert ref.level <= rung - 1  # the reference itself never beats its own rung
    assert copy.whitebox_accuracy == ref.whitebox_accuracy and copy.clean_accuracy == ref.clean_accuracy
