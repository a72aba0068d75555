"""The network page's gallery is a seeded random sample of the eval images, not a
selection by outcome: the share of successful attacks in it estimates the attack
success rate without bias, the same seed gives the same sample, and the page says so."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from evaluator.services import storage
from leaderboard import gallery
from tests.fakes import fake_suite


def _hits(n: int, rate: float, seed: int = 5) -> np.ndarray:
    """n outcomes, exactly round(rate * n) of them successful attacks, in random places."""
    hit = np.zeros(n, bool)
    hit[np.random.default_rng(seed).choice(n, size=round(rate * n), replace=False)] = True
    return hit


def test_same_seed_same_sample_and_a_proper_draw() -> None:
    a, b = gallery.gallery_indices(2000, 12, seed=3), gallery.gallery_indices(2000, 12, seed=3)
    assert a == b
    assert len(a) == 12 == len(set(a)) and a == sorted(a) and all(0 <= i < 2000 for i in a)
    assert gallery.gallery_indices(2000, 12, seed=4) != a
    assert gallery.gallery_indices(5, 12) == [0, 1, 2, 3, 4]  # fewer images than slots: all of them
    assert gallery.gallery_indices(0) == []


@pytest.mark.parametrize("rate", [0.049, 0.5, 0.95])
def test_share_of_hits_in_the_sample_tracks_the_attack_success(rate: float) -> None:
    """Over many seeds the sample's share of hits has the mean and spread of a draw without
    replacement (hypergeometric), whatever the success rate: no outcome is preferred. The
    old gallery showed 8 hits of 8 on a network with 4.9% attack success."""
    n, k = 2000, gallery.GALLERY_SIZE
    hit = _hits(n, rate)
    p = hit.mean()
    shares = np.array([hit[gallery.gallery_indices(n, k, seed=s)].mean() for s in range(3000)])
    variance = p * (1 - p) / k * (n - k) / (n - 1)
    assert abs(shares.mean() - p) < 4 * math.sqrt(variance / len(shares))
    assert shares.var() == pytest.approx(variance, rel=0.12)
    # The page's own seed: within three standard deviations of the truth.
    assert abs(hit[gallery.gallery_indices(n, k)].mean() - p) <= 3 * math.sqrt(variance)


@pytest.mark.django_db
def test_page_shows_the_seeded_sample_and_labels_it(client) -> None:
    suite = fake_suite(references=3, uploads=1)
    net = suite.uploads[0]
    adv = net.adversarial
    labels = storage.eval_labels(suite.benchmark.data_file)
    targets = np.load(storage.media_path(suite.benchmark.data_file))["targets"]
    predictions = adv.prediction_array()
    # Stored attack success made consistent with the stored predictions (the fakes draw them apart).
    hit = predictions == targets
    adv.success_rate = float(hit.mean())
    adv.save()
    html = client.get(f"/networks/{net.pk}/").content.decode()
    shown = [int(i) for i in re.findall(rf"/networks/{net.pk}/gallery/(\d+)\.png\?part=original", html)]
    expected = gallery.gallery_indices(len(labels))
    assert shown == expected
    hits = int(hit[expected].sum())
    label = re.sub(r"\s+", " ", html.split('id="gallery-sample">')[1].split("</p>")[0])
    assert f"{len(expected)} of the {len(labels)} eval images drawn at random (seed {gallery.GALLERY_SEED}" in label
    assert f"the attack hit its target on {hits} of {len(expected)}" in label
    assert f"{adv.success_rate * 100:.1f}%" in label
    # The toggle's counts and each item's class agree with the stored outcomes.
    assert f'Attack hit <span class="count">{hits}</span>' in html
    assert f'Missed <span class="count">{len(expected) - hits}</span>' in html
    assert html.count('<figure class="triple hit">') == hits
    # Another network shows the same eval images: pages are comparable side by side.
    other = client.get(f"/networks/{suite.references[0].pk}/").content.decode()
    assert [int(i) for i in re.findall(r"/gallery/(\d+)\.png\?part=original", other)] == expected
