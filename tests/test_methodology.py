"""The methodology: docs/METHODOLOGY.md and /methodology/ say what the code does.

- The doc's definitions are exactly what the code generates now (constants included),
  and the settings restated from TensorFlow-only modules match those modules.
- The worked example's numbers are checked against an independent computation from the
  stored per-image predictions (numpy and scipy, not the engine).
- Every link inside the definitions, and every anchor a page may link, exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from evaluator.engine import flags, ladder, metrics
from evaluator.models import Evaluation
from evaluator.services import storage
from leaderboard import methodology
from leaderboard.methodology.definitions import TF_SETTINGS
from leaderboard.methodology.markup import md_escape, to_html
from tests.fakes import fake_network, fake_suite

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / methodology.DOC_PATH


def test_doc_definitions_are_generated_from_the_code() -> None:
    """Regenerate the static part; any edit to a definition or constant must be written
    back with `python manage.py methodology --write --keep-example`."""
    text = DOC.read_text()
    assert methodology.static_part(text) == methodology.static_part(methodology.document(benchmark=None))
    assert '<a id="example"></a>' in text and "## Worked example" in text


def test_constants_in_the_doc_are_the_codes() -> None:
    text = methodology.static_part(DOC.read_text())
    assert repr(metrics.Z_95) in text
    assert f"p < {ladder.SIGNIFICANCE:g}" in text
    assert f"{flags.AUDIT_GAP * 100:g} percentage points" in text and f"{flags.AUDIT_RATIO:g} ×" in text
    assert f"more than {flags.VANISHED_THRESHOLD * 100:g}% of the images" in text
    assert f"{flags.MEMORISATION_DROP * 100:g} percentage points" in text and "at most 1/255" in text
    assert f"moved by more than {flags.DETERMINISM_TOLERANCE:g}" in text
    for size, _shuffled in flags.DETERMINISM_PASSES:
        assert f"batches of {size}" in text
    for name, description in flags.DESCRIPTIONS.items():
        assert f'<a id="flag-{name}"></a>' in text and description[1:] in text


def test_settings_restated_from_tensorflow_modules_match_them() -> None:
    from evaluator.engine.attacks import AttackConfig
    from evaluator.engine.audit import AuditConfig
    from evaluator.engine.jobs import EOT_SAMPLES_STOCHASTIC
    from evaluator.engine.universal import UniversalConfig

    audit, universal, attack = AuditConfig(), UniversalConfig(), AttackConfig()
    for key, value in TF_SETTINGS["audit"].items():
        expected = EOT_SAMPLES_STOCHASTIC if key == "eot_samples" else getattr(audit, key)
        assert value == pytest.approx(expected), key
    for key, value in TF_SETTINGS["universal"].items():
        assert value == getattr(universal, key), key
    for key, value in TF_SETTINGS["attack"].items():
        assert value == getattr(attack, key), key


def test_links_inside_the_definitions_resolve() -> None:
    anchors = set(methodology.by_anchor()) | {"example"}
    for d in methodology.definitions():
        for target in re.findall(r"\]\(#([a-z0-9-]+)\)", d.body):
            assert target in anchors, (d.anchor, target)
    assert len(anchors) == len(methodology.definitions()) + 1  # no anchor defined twice


def test_markup_escapes_text_from_outside() -> None:
    hostile = '<script>alert(1)</script> [x](javascript:alert(1)) **bold** `code` | pipe'
    html = to_html(f"Name: {md_escape(hostile)} and [a link](#level) but not [this](javascript:alert(2)).")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="javascript' not in html and '<a href="#level">a link</a>' in html
    assert "<strong>" not in html and "**bold**" in html and "<code>" not in html


def _independent_pair(labels: np.ndarray, x, r) -> tuple[int, int, int, int]:
    """Right counts and discordant counts of x and r on adv(x) + adv(r), from the rows."""
    def right(network, source) -> np.ndarray:
        if network.pk == source.pk:
            return network.adversarial.prediction_array() == labels
        e = Evaluation.objects.get(network=network, source=source, kind=Evaluation.Kind.ADVERSARIAL)
        return e.prediction_array() == labels

    ours = np.concatenate([right(x, x), right(x, r)])
    theirs = np.concatenate([right(r, x), right(r, r)])
    return int(ours.sum()), int(theirs.sum()), int((ours & ~theirs).sum()), int((~ours & theirs).sum())


@pytest.mark.django_db
def test_page_defines_everything_and_recomputes_the_example(client) -> None:
    from scipy.stats import binomtest

    suite = fake_suite(references=4, uploads=2)
    page = client.get("/methodology/")
    assert page.status_code == 200
    html = page.content.decode()
    for d in methodology.definitions():
        assert f'id="{d.anchor}"' in html, d.anchor
    assert 'id="example"' in html
    # The default example: the public upload with the highest level.
    suite.uploads[0].refresh_from_db(), suite.uploads[1].refresh_from_db()
    net = max(suite.uploads, key=lambda n: (n.level, n.score))
    example = html.split('id="example"')[1]
    text = re.sub(r"<[^>]+>", "", example)
    assert f"{net.name}, an upload, level {net.level}" in text
    # Wilson interval: the printed bounds are the stored ones, and a textbook formula's.
    clean = Evaluation.objects.get(network=net, kind=Evaluation.Kind.CLEAN, source__isnull=True)
    p, n, z = clean.correct / clean.total, clean.total, 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert f"[{centre - half:.4f}, {centre + half:.4f}]" in text
    assert f"[{net.clean_low:.4f}, {net.clean_high:.4f}]" in text
    # Each rung's row from the per-image predictions, McNemar p from scipy, the level from the climb.
    labels = storage.eval_labels(suite.benchmark.data_file)
    refs = {r.pk: r for r in suite.references}
    climb = 0
    for position, rid in enumerate(suite.benchmark.ladder, start=1):
        ours, theirs, b, c = _independent_pair(labels, net, refs[rid])
        p_value = binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0
        shown = f"{p_value:.2e}" if p_value < 0.001 else f"{p_value:.3f}"
        row = f"R{position} | {refs[rid].name} | {2 * len(labels)} | {ours} | {theirs} | {b} | {c} | {shown}"
        cells = re.findall(r"<tr>(.*?)</tr>", example)
        assert any(re.sub(r"</td><td[^>]*>", " | ", re.sub(r"^<td[^>]*>|</td>$", "", r)).startswith(row) for r in cells), row
        if climb == position - 1 and ours > theirs:
            climb = position
    assert climb == net.level
    # The score: placed against the stored reference scores, equal to the stored one.
    assert f"score {net.score:.3f} (stored: {net.score:.3f})" in text


@pytest.mark.django_db
def test_example_of_a_chosen_network_respects_visibility(client, alice, bob) -> None:
    suite = fake_suite(references=3)
    secret = fake_network(suite.benchmark, suite.labels, name="alice-secret", strength=0.6, owner=alice,
                          is_public=False, peers=suite.references, seed=9)
    from evaluator.services.ranking import benchmark_rank

    benchmark_rank(benchmark=suite.benchmark)
    assert client.get(f"/methodology/?network={secret.pk}").status_code == 404
    client.force_login(bob)
    assert client.get(f"/methodology/?network={secret.pk}").status_code == 404
    client.force_login(alice)
    html = client.get(f"/methodology/?network={secret.pk}").content.decode()
    assert "<strong>alice-secret</strong>, an upload" in html
    # A reference as the subject: its score is fitted again among the references.
    ref = suite.references[1]
    ref.refresh_from_db()
    text = re.sub(r"<[^>]+>", "", client.get(f"/methodology/?network={ref.pk}").content.decode())
    assert f"{ref.name}, a reference defense" in text
    assert f"gets {ref.score:.3f} (stored: {ref.score:.3f})" in text


@pytest.mark.django_db
def test_check_command_fails_on_a_stale_doc(tmp_path, settings) -> None:
    call_command("methodology", "--check")  # the committed doc is current
    (tmp_path / "docs").mkdir()
    stale = DOC.read_text().replace("(no continuity correction)", "(with continuity correction)", 1)
    assert stale != DOC.read_text()
    (tmp_path / methodology.DOC_PATH).write_text(stale)
    settings.BASE_DIR = tmp_path
    with pytest.raises(CommandError, match="stale"):
        call_command("methodology", "--check")
