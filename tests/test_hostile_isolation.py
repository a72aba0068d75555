"""Isolation through the product path (issue 11): upload → pipeline → sandbox.

Each attack aims at something real: another network's stored checkpoint (to rewrite a
reference or leak a private network's weights), a file outside the job's scratch, the
TF1 loading path, the peers' evaluation of a later upload. Each ends rejected or
contained with the reason shown; afterwards no payload file exists, every stored file of
every other network is byte-identical, and a normal upload is ranked. The second layer
(bubblewrap) is proven separately by running the same models with the scan skipped.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from evaluator.engine import isolation
from evaluator.engine.sandbox import run_in_sandbox
from evaluator.models import Evaluation, Job, PeerFailure
from evaluator.services import storage
from evaluator.services.jobs import MODEL_CHANGED
from evaluator.services.pipeline import network_run_pipeline, network_validate
from evaluator.services.results import FLAG_FAILED_LATER
from leaderboard.models import Network
from tests.hostile_archives import zip_folder
from tests.hostile_checkpoint_models import (
    serving_calls_restorev2_crafted_saver_def,
    serving_calls_savev2_renamed_node,
    tf1_format_model,
    writes_outside_scratch,
)
from tests.hostile_models import m_infinite_loop
from tests.hostile_upload import ctx, upload, uploader  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
S = Network.Status


def _stored_files() -> dict[str, str]:
    """sha256 of every stored file under networks/ and benchmarks/."""
    root = Path(django_settings.MEDIA_ROOT)
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for top in ("networks", "benchmarks") for p in (root / top).rglob("*") if p.is_file()
    }


def _unchanged_except(before: dict[str, str], after: dict[str, str], pk: int) -> list[str]:
    mine = f"networks/{pk}/"
    return sorted(k for k in set(before) | set(after) if not k.startswith(mine) and before.get(k) != after.get(k))


def _checkpoint_of(network: Network) -> str:
    """The prefix of a stored network's variables (what SaveV2/RestoreV2 would name)."""
    return str(storage.media_path(network.info["model_dir"]) / "variables" / "variables")


@pytest.fixture
def victims(mini_benchmark):
    refs = {n.recipe: n for n in Network.objects.filter(benchmark=mini_benchmark, is_reference=True)}
    return refs["control"], refs["down50"]


def _live_spares() -> set[Path]:
    from evaluator.services import spares

    return {spare.workdir / "in" for spare in spares.spares_waiting()}


ATTACKS = {
    # (builder, the words the reason must hold)
    "savev2-renamed-node-over-control": (
        lambda ctx, control, other: serving_calls_savev2_renamed_node(ctx.tmp / "m", _checkpoint_of(control)),
        ("SaveV2",)),
    "restorev2-crafted-saver-def-leaks-weights": (
        lambda ctx, control, other: serving_calls_restorev2_crafted_saver_def(ctx.tmp / "m", _checkpoint_of(other)),
        ("RestoreV2",)),
    "restorev2-relative-path-from-job-folder": (
        lambda ctx, control, other: serving_calls_restorev2_crafted_saver_def(
            ctx.tmp / "m", f"../../media/networks/{other.pk}/model/variables/variables"),
        ("RestoreV2",)),
    "savev2-absolute-outside-scratch": (
        lambda ctx, control, other: writes_outside_scratch(ctx.tmp / "m", ctx.canary_target),
        ("SaveV2",)),
    "merge-checkpoints-outside-scratch": (
        lambda ctx, control, other: writes_outside_scratch(ctx.tmp / "m", ctx.tmp_target, merge=True),
        ("MergeV2Checkpoints",)),
    "tf1-format-saver-restore": (
        lambda ctx, control, other: tf1_format_model(ctx.tmp / "m", ctx.canary_target),
        ("TF1-format", "tf.saved_model.save")),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_checkpoint_and_tf1_attacks_are_rejected_and_touch_nothing(attack, ctx, uploader, client, victims):
    control, other = victims
    build, words = ATTACKS[attack]
    before = _stored_files()
    jobs_before = set((Path(django_settings.VAR_DIR) / "jobs").glob("*/in"))
    status, error, pk = upload(client, uploader, via="api", data=zip_folder(build(ctx, control, other)),
                               filename="m.zip", name=attack)
    assert status == 202, error
    net = Network.objects.get(pk=pk)
    assert network_run_pipeline(network=net) is False
    net.refresh_from_db()
    assert net.status == S.REJECTED, (net.status, net.reason)
    for word in words:
        assert word in net.reason, (word, net.reason)
    assert _unchanged_except(before, _stored_files(), pk) == []
    for target in (ctx.canary_target, ctx.tmp_target):
        assert not any(Path(p).exists() for p in (target, target + ".index", target + ".data-00000-of-00001"))
    # No job folder left behind by this upload (what earlier tests left is theirs; a
    # live spare's is the next job's, and holds nothing until that job's request).
    assert set((Path(django_settings.VAR_DIR) / "jobs").glob("*/in")) - _live_spares() <= jobs_before


@pytest.mark.skipif(bool(isolation.bwrap_problem()), reason="bubblewrap unavailable")
def test_bubblewrap_contains_a_model_that_got_past_the_scan(ctx, victims, tmp_path):
    """Second layer: the same models loaded and called with no scan at all, inside the
    sandbox. The write to another network's checkpoint and the read of its weights fail:
    those paths do not exist in the child's world."""
    control, other = victims
    before = _stored_files()
    writer = serving_calls_savev2_renamed_node(tmp_path / "w", _checkpoint_of(control))
    reader = serving_calls_restorev2_crafted_saver_def(tmp_path / "r", _checkpoint_of(other))
    for model in (writer, reader):
        r = run_in_sandbox("tests.sandbox_targets:call_unscanned", {"model_dir": "in/model"},
                           workdir=tmp_path / f"job-{model.name}", inputs={"model": model})
        assert r.isolated and not r.ok, r
        assert "NotFound" in r.log or "No such file" in r.log or "Failed to" in r.log, r.log[-2000:]
    assert _stored_files() == before


def _plant_peer(benchmark, owner, model: Path, like: Network) -> Network:
    """A network that passed its own evaluation (its rows are copied from `like`) and
    misbehaves only when it is evaluated again later, as a peer of a new upload."""
    peer = Network.objects.create(benchmark=benchmark, owner=owner, name="sleeper", status=S.RANKED, progress=100,
                                  archive="x", is_public=True)
    folder = storage.network_dir(peer.pk) / "model"
    shutil.copytree(model, folder)
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString((model / "saved_model.pb").read_bytes())
    (input_key,) = proto.meta_graphs[0].signature_def["serving_default"].inputs
    info = {"signature": "serving_default", "input_key": input_key, "output_key": "logits", "input_shape": [28, 28, 1],
            "fixed_batch": None, "num_classes": 10, "outputs_probabilities": False, "deterministic": True,
            "model_dir": storage.relative(folder), "eval_seconds": 0.2}
    Network.objects.filter(pk=peer.pk).update(info=info, model_files=isolation.folder_manifest(folder))
    adv = like.adversarial
    adv.pk, adv.network = None, peer
    adv.save()
    for e in Evaluation.objects.filter(network=like):
        e.pk, e.network = None, peer
        e.save()
    for e in Evaluation.objects.filter(source=like).exclude(network=peer):
        e.pk, e.source = None, peer
        e.save()
    peer.refresh_from_db()
    return peer


def test_a_peer_that_hangs_later_is_charged_and_the_upload_is_ranked(ctx, uploader, client, victims, settings,
                                                                     tiny_cnn_dir):
    # Its own pass took 0.2 s, and its child gets two sets (the upload's, and control's,
    # which the planted peer never met): 10 × 0.2 × 2 + 8 = 12 s.
    settings.PEER_TIMEOUT_MARGIN_S = 8
    control, _other = victims
    loop = m_infinite_loop(ctx)
    signature = loop / "saved_model.pb"
    assert signature.exists()
    peer = _plant_peer(control.benchmark, uploader, loop, control)
    before = _stored_files()
    status, error, pk = upload(client, uploader, via="api", data=zip_folder(tiny_cnn_dir), filename="good.zip",
                               name="innocent")
    assert status == 202, error
    innocent = Network.objects.get(pk=pk)
    assert network_run_pipeline(network=innocent) is True
    innocent.refresh_from_db()
    assert innocent.status == S.RANKED and innocent.level is not None, innocent.reason
    failure = PeerFailure.objects.get(network=peer)
    assert failure.source_id == pk and "longer than" in failure.reason and not failure.resolved
    peer.refresh_from_db()
    assert peer.status == S.QUEUED and FLAG_FAILED_LATER in peer.flags
    assert "failed a later evaluation" in peer.reason
    assert peer.pk not in control.benchmark.__class__.objects.get(pk=control.benchmark_id).ladder
    # The hung child ran with the peer's own short limit, as the peer's job, with every
    # set it had not met in the one child.
    cell = Job.objects.filter(network=peer, kind=Job.Kind.CROSS).latest("created_at")
    assert "ran longer than 12 s" in cell.log
    assert f"innocent (network {pk}), control (network {control.pk})" in cell.log
    assert _unchanged_except(before, _stored_files(), pk) == []

    # A stored model that changed on disk is never loaded again.
    variables = next((storage.media_path(innocent.info["model_dir"]) / "variables").glob("*.data-*"))
    variables.write_bytes(variables.read_bytes()[::-1])
    Evaluation.objects.filter(network=innocent, source__isnull=True).delete()
    innocent.refresh_from_db()
    assert network_validate(network=innocent) is False
    innocent.refresh_from_db()
    assert innocent.status == S.FAILED and innocent.reason == MODEL_CHANGED
    job = Job.objects.filter(network=innocent).latest("created_at")
    assert "differs from the accepted file" in job.log and variables.name in job.log
