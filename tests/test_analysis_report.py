"""The issue-15 sections of docs/BENCHMARK.md: every number recomputed from stored arrays.

Like tests/test_report.py: the sections are generated for a synthetic benchmark whose
rows were written by the real engine and store (tests.analysis_fakes); each line holding
a digit must match a known sentence or table pattern, and each number in it is compared
with a value recomputed here from the stored per-image arrays (scores, norms, energy
shares, distances) and the dataset, with scikit-learn and NumPy, not with the engine.
Then every digit is changed in turn and the check must fail each time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics import auc as area_under_curve
from sklearn.metrics import roc_auc_score, roc_curve

from evaluator.engine.datasets import load_dataset
from evaluator.models import Analysis
from evaluator.services import storage
from evaluator.services.analysis_report import analysis_markdown
from leaderboard.models import Benchmark, Network
from tests.analysis_fakes import fake_adversarial_sets, fake_analysis
from tests.fakes import fake_suite
from tests.report_checks import assert_every_digit_checked, match_lines

pytestmark = pytest.mark.django_db
Z = 1.959963984540054
NAMES = {"discriminator": "discriminator", "mahalanobis": "baseline"}


def _wilson(flags: np.ndarray) -> tuple[float, float, float]:
    n, p = len(flags), float(np.mean(flags))
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return p, centre - half, centre + half


def _mean(values: np.ndarray) -> tuple[float, float, float]:
    v = values[np.isfinite(values)]
    half = Z * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


@dataclass
class SetTruth:
    kind: str
    auc: dict[str, tuple[float, float, float]]
    rate: dict[str, tuple[float, float, float]]
    l0: float
    l2: float
    linf: float
    energy: list[tuple[tuple, tuple]]  # per k: (attack mean/low/high, noise mean/low/high)
    own: tuple
    own_clean: tuple
    target: tuple | None
    target_clean: tuple | None
    closer: tuple | None
    closer_clean: tuple | None
    other: tuple


@dataclass
class Truth:
    bench: Benchmark
    sets: dict[str, SetTruth]  # by the label the report prints
    clean: int
    train: int
    dims: int
    ks: list[int]
    explained: list[float]


def _bootstrap(clean: np.ndarray, adv: np.ndarray, rounds: int = 1000) -> tuple[tuple, tuple]:
    """AUC and detection-rate intervals over the documented resamples (pairs kept), with
    scikit-learn computing each resample's figures."""
    rng = np.random.default_rng(0)
    n = len(clean)
    y = np.r_[np.zeros(n), np.ones(n)]
    aucs, rates = [], []
    for _ in range(rounds):
        i = rng.integers(0, n, n)
        fpr, tpr, _ = roc_curve(y, np.r_[clean[i], adv[i]], drop_intermediate=False)
        aucs.append(area_under_curve(fpr, tpr))  # the area under the full curve: ties count half
        rates.append(tpr[fpr <= 0.05].max())
    return (np.percentile(aucs, 2.5), np.percentile(aucs, 97.5)), (np.percentile(rates, 2.5), np.percentile(rates, 97.5))


def measure(bench: Benchmark) -> Truth:
    ds = load_dataset(storage.media_path(bench.data_file))
    basis_row = Analysis.objects.get(benchmark=bench, kind="basis")
    basis = np.load(storage.media_path(basis_row.file))
    rung = {pk: k for k, pk in enumerate(bench.ladder, start=1)}
    n = len(ds.y_eval)
    idx = np.arange(n)
    dims = int(np.prod(ds.shape))
    ks = [min(k, dims) for k in (10, 50, 314)]
    ks = list(dict.fromkeys(ks))
    sets = {}
    for row in Analysis.objects.filter(benchmark=bench).exclude(kind="basis").select_related("network"):
        if row.network is not None and row.network_id not in rung:
            continue
        label = f"R{rung[row.network_id]} {row.network.name}" if row.network else "universal set"
        a = np.load(storage.media_path(row.file))
        auc, rate = {}, {}
        for d in ("discriminator", "mahalanobis"):
            clean, adv = basis[f"clean_{d}"], a[f"score_{d}"]
            y = np.r_[np.zeros(n), np.ones(n)]
            fpr, tpr, _ = roc_curve(y, np.r_[clean, adv], drop_intermediate=False)
            (alo, ahi), (rlo, rhi) = _bootstrap(clean, adv)
            auc[d] = (roc_auc_score(y, np.r_[clean, adv]), alo, ahi)
            rate[d] = (tpr[fpr <= 0.05].max(), rlo, rhi)
        dist, cd = a["distances"], basis["clean_distances"]
        targets = a["targets"] if "targets" in a.files else None
        own, own_clean = dist[idx, ds.y_eval], cd[idx, ds.y_eval]
        energy = [(_mean(a["shares"][:, j]), _mean(a["noise_shares"][:, j])) for j in range(len(ks))]
        sets[label] = SetTruth(
            row.kind, auc, rate, float(a["l0"].mean()), float(a["l2"].mean()), float(a["linf"].mean()), energy,
            _mean(own), _mean(own_clean),
            _mean(dist[idx, targets]) if targets is not None else None,
            _mean(cd[idx, targets]) if targets is not None else None,
            _wilson(dist[idx, targets] < own) if targets is not None else None,
            _wilson(cd[idx, targets] < own_clean) if targets is not None else None,
            _wilson(dist.argmin(axis=1) != ds.y_eval))
    pca = PCA(svd_solver="full").fit(ds.x_train.reshape(len(ds.x_train), -1).astype(np.float64))
    explained = [float(np.cumsum(pca.explained_variance_ratio_)[k - 1]) for k in ks]
    return Truth(bench, sets, n, len(ds.y_train), dims, ks, explained)


def close(printed: str, true: float, scale: float = 1.0) -> None:
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    assert abs(float(printed) - true * scale) <= 0.5 * 10 ** -decimals + 1e-9, (printed, true * scale)


def close_triple(m: re.Match, prefix: str, truth: tuple, scale: float = 1.0) -> None:
    for key, value in zip(("", "_lo", "_hi"), truth):
        close(m[prefix + key], value, scale)


def span(m: re.Match, key: str, values: list[float], scale: float = 1.0) -> None:
    """"a to b" (or a single value when both print the same) is min to max."""
    lo, hi = m[key + "_lo"], m[key + "_hi"] or m[key + "_lo"]
    close(lo, min(values), scale), close(hi, max(values), scale)
    if m[key + "_hi"] is None:
        assert f"{min(values) * scale:.{len(lo.split('.')[1])}f}" == f"{max(values) * scale:.{len(lo.split('.')[1])}f}"


def _span(key: str) -> str:
    return rf"(?P<{key}_lo>[\d.]+)(?: to (?P<{key}_hi>[\d.]+))?"


def _triple(key: str) -> str:
    return rf"(?P<{key}>[\d.]+) \[(?P<{key}_lo>[\d.]+), (?P<{key}_hi>[\d.]+)\]"


def _pct3(key: str) -> str:
    return rf"(?P<{key}>[\d.]+)% \[(?P<{key}_lo>[\d.]+), (?P<{key}_hi>[\d.]+)\]"


def compare(a: tuple, b: tuple) -> str:
    return "better" if a[1] > b[2] else "worse" if a[2] < b[1] else "as well"


def check(text: str, t: Truth) -> None:
    labels = list(t.sets)
    label_rx = "|".join(map(re.escape, labels))
    grad = [s for s in t.sets.values() if s.kind == "gradient"]
    seen: dict[str, int] = {}

    def intro(m: re.Match) -> None:
        assert int(m["clean"]) == t.clean and int(m["rounds"]) == 1000 and m["fp"] == "5"

    def det_row(m: re.Match) -> None:
        s = t.sets[m["label"]]
        for d, key in (("discriminator", "d"), ("mahalanobis", "b")):
            close_triple(m, key, s.auc[d])
            close_triple(m, key + "r", s.rate[d], 100)
        assert m["verdict"] == compare(s.auc["discriminator"], s.auc["mahalanobis"])

    def verdict(m: re.Match) -> None:
        found = [compare(s.auc["discriminator"], s.auc["mahalanobis"]) for s in t.sets.values()]
        assert int(m["n"]) == len(t.sets)
        assert [int(m[k]) for k in ("better", "same", "worse")] == [found.count(v) for v in ("better", "as well", "worse")]
        span(m, "d", [s.auc["discriminator"][0] for s in t.sets.values()])
        span(m, "b", [s.auc["mahalanobis"][0] for s in t.sets.values()])

    def pca_line(m: re.Match) -> None:
        assert int(m["train"]) == t.train and int(m["dims"]) == t.dims
        assert [int(k) for k in m["ks"].split(", ")] == t.ks
        for printed, value in zip(re.findall(r"[\d.]+", m["explained"]), t.explained):
            close(printed, value, 100)

    def size_header(m: re.Match) -> None:
        assert m["ks"] == " | ".join(f"top {k}: attack | top {k}: noise" for k in t.ks)

    def size_row(m: re.Match) -> None:
        s = t.sets[m["label"]]
        close(m["l0"], s.l0, 100), close(m["l2"], s.l2), close(m["linf"], s.linf)
        cells = m["energy"].split(" | ")
        assert len(cells) == 2 * len(t.ks)
        for j, (attack, noise) in enumerate(s.energy):
            for cell, truth in ((cells[2 * j], attack), (cells[2 * j + 1], noise)):
                close_triple(re.fullmatch(_pct3("e"), cell), "e", truth, 100)

    def neighbour_row(m: re.Match) -> None:
        s = t.sets[m["label"]]
        close_triple(m, "own", s.own), close_triple(m, "ownc", s.own_clean), close_triple(m, "other", s.other, 100)
        if s.target is None:
            assert m["rest"] == "– | – | –"
            return
        parts = re.fullmatch(rf"{_triple('t')} \| {_triple('tc')} \| {_pct3('cl')}", m["rest"])
        assert parts, m["rest"]
        close_triple(parts, "t", s.target), close_triple(parts, "tc", s.target_clean)
        close_triple(parts, "cl", s.closer, 100)

    def sizes(m: re.Match) -> None:
        close(m["eps"], t.bench.epsilon), close(m["xi"], t.bench.universal_xi)
        span(m, "l0", [s.l0 for s in grad], 100), span(m, "l2", [s.l2 for s in grad])
        span(m, "linf", [s.linf for s in grad])
        u = next(s for s in t.sets.values() if s.kind == "universal")
        close(m["ul0"], u.l0, 100), close(m["ul2"], u.l2), close(m["ulinf"], u.linf)

    def energy(m: re.Match) -> None:
        j = t.ks.index(int(m["k"]))
        seen[m["k"]] = seen.get(m["k"], 0) + 1
        close(m["kd"], int(m["k"]) / t.dims, 100)
        attack = [s.energy[j][0] for s in t.sets.values()]
        noise = [s.energy[j][1] for s in t.sets.values()]
        span(m, "a", [a[0] for a in attack], 100), span(m, "n", [x[0] for x in noise], 100)
        above = sum(a[1] > x[2] for a, x in zip(attack, noise))
        below = sum(a[2] < x[1] for a, x in zip(attack, noise))
        assert (int(m["above"]), int(m["of"]), int(m["below"])) == (above, len(t.sets), below)
        tail = m["tail"]
        if above == len(t.sets):
            assert tail.startswith(": the perturbations lean towards")
        elif below == len(t.sets):
            assert tail.startswith(": the perturbations lie off")
        else:
            assert tail == "."

    def neighbours(m: re.Match) -> None:
        span(m, "own", [s.own[0] for s in grad]), span(m, "ownc", [s.own_clean[0] for s in grad])
        span(m, "t", [s.target[0] for s in grad]), span(m, "tc", [s.target_clean[0] for s in grad])
        closer = [s.closer[0] for s in grad]
        span(m, "cl", closer, 100), span(m, "clc", [s.closer_clean[0] for s in grad], 100)
        tail = m["tail"]
        if max(closer) <= 0.5:
            assert tail.startswith(", at most 50% on every set")
        elif min(closer) > 0.5:
            assert tail.startswith(", above 50% on every set")
        else:
            assert tail == "."

    cell = r"[^|]+"
    patterns = [
        ("intro", rf"Each detector scores every image; the figures are the ROC AUC of the (?P<clean>\d+) clean eval "
         rf"images against each adversarial set \(0\.5 = chance\), with a 95% bootstrap interval over (?P<rounds>\d+) "
         rf"resamples of the images, and the share of adversarial images caught when at most (?P<fp>\d+)% of the "
         rf"clean ones are flagged\. The baseline is the Mahalanobis detector on the control's penultimate "
         rf"features\.", intro, 1),
        ("det row", rf"\| (?P<label>{label_rx}) \| {_triple('d')} \| {_pct3('dr')} \| {_triple('b')} \| {_pct3('br')} "
         rf"\| (?P<verdict>better|as well|worse) \|", det_row, len(labels)),
        ("verdict", rf"- \*\*Verdict\.\*\* Against the baseline, on (?P<n>\d+) sets the discriminator detects "
         rf"(?P<better>\d+) better, (?P<same>\d+) as well \(overlapping 95% intervals\) and (?P<worse>\d+) worse\. "
         rf"Its AUC spans {_span('d')}, the baseline's {_span('b')}\.", verdict, 1),
        ("pca", r"PCA of the (?P<train>\d+) train images in (?P<dims>\d+) dimensions: the top (?P<ks>[\d, ]+) "
         r"components hold (?P<explained>[\d.%, ]+) of the train variance\.", pca_line, 1),
        ("size header", r"\| set \| pixels changed \| mean L2 \| mean L∞ \| (?P<ks>.*) \|", size_header, 1),
        ("size row", rf"\| (?P<label>{label_rx}) \| (?P<l0>[\d.]+)% \| (?P<l2>[\d.]+) \| (?P<linf>[\d.]+) \| "
         rf"(?P<energy>{cell}( \| {cell})*) \|", size_row, len(labels)),
        ("neighbour row", rf"\| (?P<label>{label_rx}) \| {_triple('own')} \| {_triple('ownc')} \| (?P<rest>.+) \| "
         rf"{_pct3('other')} \|", neighbour_row, len(labels)),
        ("l2 note", re.escape("L2 distances in pixel space, means with 95% intervals."), lambda m: None, 1),
        ("sizes", rf"- \*\*Perturbation sizes\.\*\* The gradient attacks \(ε = (?P<eps>[\d.]+)\) change "
         rf"{_span('l0')}% of the pixels on average, with mean L2 norms {_span('l2')} and mean L∞ norms "
         rf"{_span('linf')}; the universal set \(ξ = (?P<xi>[\d.]+)\) changes (?P<ul0>[\d.]+)%, mean L2 "
         rf"(?P<ul2>[\d.]+), mean L∞ (?P<ulinf>[\d.]+)\.", sizes, 1),
        ("energy", rf"- \*\*Top (?P<k>\d+) components\*\* \(k/D = (?P<kd>[\d.]+)%\): the attacks put {_span('a')}% of "
         rf"their energy there, Gaussian noise of the same norm {_span('n')}%; more than noise on (?P<above>\d+) of "
         rf"(?P<of>\d+) sets, less on (?P<below>\d+) \(disjoint 95% intervals\)(?P<tail>.*)", energy, len(t.ks)),
        ("neighbours", rf"- \*\*Nearest train images\.\*\* The gradient attacks' images are {_span('own')} from the "
         rf"nearest train image of their own class on average \(clean images: {_span('ownc')}\) and {_span('t')} "
         rf"from the nearest of their target class \(clean: {_span('tc')}\); the target class's is the nearer for "
         rf"{_span('cl')}% of them \(clean images: {_span('clc')}%\)(?P<tail>.*)", neighbours, 1),
    ]
    match_lines(text, patterns)
    assert sorted(seen) == sorted(str(k) for k in t.ks)


@pytest.fixture
def generated() -> tuple[str, Truth]:
    suite = fake_suite(references=3, uploads=1, name="analysis-report")
    fake_adversarial_sets(suite.benchmark)
    fake_analysis(suite.benchmark)
    bench = Benchmark.objects.get(pk=suite.benchmark.pk)
    return "\n".join(analysis_markdown(benchmark=bench)), measure(bench)


def test_every_number_of_the_analysis_sections_matches_the_stored_arrays(generated) -> None:
    """Then every digit changed in turn (by 5, mod 10): the check must fail each time."""
    text, truth = generated
    assert "## Can a GAN discriminator detect adversarial images?" in text
    assert "## Adversarial images in image vector space" in text
    assert "upload-1" not in text  # the benchmark's own report: references and the universal set
    check(text, truth)
    assert_every_digit_checked(text, lambda wrong: check(wrong, truth))


def test_without_analysis_the_report_says_how_to_compute_it() -> None:
    suite = fake_suite(references=2, name="unanalysed")
    lines = analysis_markdown(benchmark=suite.benchmark)
    assert "Not computed yet: run `python manage.py analyse_benchmark unanalysed`." in lines
    assert not any(re.search(r"\d", line) for line in lines)


def test_without_a_discriminator_the_report_names_the_rebuild() -> None:
    suite = fake_suite(references=2, name="older")
    fake_adversarial_sets(suite.benchmark)
    fake_analysis(suite.benchmark, discriminator=False)
    text = "\n".join(analysis_markdown(benchmark=suite.benchmark))
    # This suite has no gan-data reference at all: the report must not say it "kept" none.
    assert "This build has no gan-data reference, so only the baseline is measured" in text
    assert "kept no discriminator" not in text
    assert "`python manage.py build_benchmark older --rebuild gan-data`" in text
    assert "discriminator AUC" not in text and "| set | baseline AUC | baseline caught |" in text
    # A gan-data reference built before the discriminator was kept.
    Network.objects.create(benchmark=suite.benchmark, name="gan-data", is_reference=True, recipe="gan-data",
                           report={})
    text = "\n".join(analysis_markdown(benchmark=suite.benchmark))
    assert "This build's gan-data reference kept no discriminator" in text and "no gan-data reference" not in text
