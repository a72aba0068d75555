"""docs/BENCHMARK.md is generated from stored numbers, and every number in it is right.

A tiny stored benchmark (tests.fakes, plus the recipe records the real builds write:
PCA components, the noise grid and σ, the GAN's real accuracy; a dataset with exact 0
and 1 pixels; a universal set that clipping cuts). The generated markdown is parsed
line by line: every line that holds a digit must match one of the known sentence or
table patterns, and each number in it is compared with a value recomputed here from
the rows and files (not read from the report's code). Then every digit of the report
is changed in turn, and the check must fail each time: no number goes unchecked.
"""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from django.conf import settings
from django.core.management import call_command

from evaluator.engine.datasets import load_dataset, save_dataset
from evaluator.models import AdversarialDataset, Evaluation, UniversalSet
from evaluator.services import storage
from leaderboard.models import Benchmark, Network
from tests.fakes import fake_suite
from tests.report_checks import assert_every_digit_checked, match_lines

pytestmark = pytest.mark.django_db

RECIPES = ["control", "pca", "noise", "down50", "down75", "gan-data"]
GRID = [{"sigma": s, "clean_acc": round(0.98 - s / 4, 4), "probe_acc": round(0.1 + s / 3, 4)}
        for s in (0.0, 0.1, 0.2, 0.3)]
# SPEC §1, the charter's ImageNet figures.
CHARTER = {"control": (0.7585, 0.5525), "pca": (0.2335, 0.2210, 0.9465),
           "down50": (0.6295, 0.5430, 0.8625), "down75": (0.7045, 0.5370, 0.7622)}
ACC = r"(?P<{0}>[\d.]+)% \[(?P<{0}_lo>[\d.]+), (?P<{0}_hi>[\d.]+)\]"


def _tiny_benchmark() -> Benchmark:
    suite = fake_suite(references=len(RECIPES), name="report")
    bench = suite.benchmark
    records = {
        "pca": ({}, {"components": 37, "input_dims": 64, "variance_kept": 0.99013}),
        "noise": ({"sigma": None, "max_clean_drop": 0.05}, {"sigma": 0.2, "grid": GRID}),
        "gan-data": ({}, {"real_accuracy": 0.8123}),
    }
    for net, recipe in zip(suite.references, RECIPES):
        params, report = records.get(recipe, ({}, {}))
        Network.objects.filter(pk=net.pk).update(name=recipe, recipe=recipe, params={**net.params, **params},
                                                 report=report)
    # Pixels exactly 0 and 1, as in MNIST, and perturbations that clipping cuts.
    rng = np.random.default_rng(5)
    path = storage.media_path(bench.data_file)
    ds = load_dataset(path)
    x = rng.random(ds.x_eval.shape, dtype=np.float32)
    x[rng.random(x.shape) < 0.6] = 0.0
    x[rng.random(x.shape) < 0.05] = 1.0
    save_dataset(replace(ds, x_eval=x), path)
    universal = UniversalSet.objects.get(benchmark=bench)
    np.savez(storage.media_path(universal.file),
             perturbations=rng.choice([-0.3, 0.3], size=(6, 8, 8, 1)).astype(np.float32))
    UniversalSet.objects.filter(pk=universal.pk).update(seconds=12.4)
    # Robust accuracy (worst case over every set) on each reference, as the ranking stores it.
    for net in suite.references:
        p, lo, hi = _wilson(int(rng.integers(0, bench.eval_size + 1)), bench.eval_size)
        Network.objects.filter(pk=net.pk).update(robust_accuracy=p, robust_low=lo, robust_high=hi)
    bench.refresh_from_db()
    return bench


def _wilson(correct: int, total: int) -> tuple[float, float, float]:
    z = 1.959963984540054
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return p, centre - half, centre + half


@dataclass
class Truth:
    """Every number the report may state, recomputed from rows and files."""

    bench: Benchmark
    refs: list[Network]  # ladder order
    acc: dict[tuple[int, str], tuple[float, float, float]]  # (network id, kind) -> value, low, high
    matrix: dict[tuple[int, int], float]
    zero: float
    one: float
    clipped: float
    generated_between: tuple[datetime, datetime]
    success: dict[int, float]  # network id -> attack success rate
    universal_seconds: float
    commit: str
    dirty: bool

    @classmethod
    def measure(cls, bench: Benchmark, start: datetime, end: datetime) -> Truth:
        refs = [Network.objects.get(pk=pk) for pk in bench.ladder]
        acc, matrix, success = {}, {}, {}
        for net in refs:
            for kind in ("clean", "universal"):
                e = Evaluation.objects.get(network=net, kind=kind, source__isnull=True)
                acc[(net.pk, kind)] = _wilson(e.correct, e.total)
            if own := Evaluation.objects.filter(network=net, kind="universal-own", source__isnull=True).first():
                acc[(net.pk, "universal-own")] = _wilson(own.correct, own.total)
            adv = AdversarialDataset.objects.get(network=net)
            acc[(net.pk, "whitebox")] = _wilson(adv.whitebox_correct, adv.total)
            acc[(net.pk, "robust")] = _wilson(round(net.robust_accuracy * adv.total), adv.total)
            success[net.pk] = adv.success_rate
            matrix[(net.pk, net.pk)] = adv.whitebox_correct / adv.total
            for e in Evaluation.objects.filter(network=net, kind="adversarial"):
                matrix[(net.pk, e.source_id)] = e.correct / e.total
        with np.load(storage.media_path(bench.data_file)) as data:
            x = data["x_eval"].astype(np.float64)
        x = x / 255.0 if x.max() > 1 else x
        with np.load(storage.media_path(UniversalSet.objects.get(benchmark=bench).file)) as data:
            p = data["perturbations"].astype(np.float64)
        cut = removed = 0.0
        for i in range(len(x)):
            delta = p[i % len(p)]
            removed += np.abs(delta).sum() - np.abs(np.clip(x[i] + delta, 0, 1) - x[i]).sum()
            cut += np.abs(delta).sum()
        return cls(bench, refs, acc, matrix, float((x == 0).mean()), float((x == 1).mean()), removed / cut,
                   (start, end), success, UniversalSet.objects.get(benchmark=bench).seconds,
                   _git("rev-parse", "HEAD") or "unknown", bool(_git("status", "--porcelain", "--untracked-files=no")))

    def net(self, name: str) -> Network:
        found = [n for n in self.refs if n.name == name]
        assert len(found) == 1, name
        return found[0]

    def value(self, name: str, kind: str) -> float:
        return self.acc[(self.net(name).pk, kind)][0]


def close(printed: str, true: float, scale: float = 1.0) -> None:
    """`printed` is `true`×scale rounded to its printed decimals."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    assert abs(float(printed) - true * scale) <= 0.5 * 10 ** -decimals + 1e-9, (printed, true * scale)


def _check_acc(m: re.Match, key: str, truth: tuple[float, float, float]) -> None:
    for group, value in zip((key, f"{key}_lo", f"{key}_hi"), truth):
        close(m.group(group), value, 100)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=settings.BASE_DIR, capture_output=True, text=True).stdout.strip()


def check_report(text: str, t: Truth) -> None:
    """Fails unless every line holding a digit matches a known pattern with true numbers."""
    names = [n.name for n in t.refs]
    seen: dict[str, int] = {}

    def header(m: re.Match) -> None:
        assert m["name"] == t.bench.name
        when = datetime.strptime(m["date"], "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc)
        start, end = t.generated_between
        assert start.replace(second=0, microsecond=0) <= when <= end, when
        assert m["platform"] == f"{platform.system()} {platform.release()} {platform.machine()}, " \
                                f"Python {platform.python_version()}"
        assert int(m["cpus"]) == os.cpu_count()
        assert m["commit"] == t.commit and bool(m["dirty"]) == t.dirty
        assert m["ranked"] == f"{t.bench.ranked_at:%Y-%m-%d %H:%M}"

    def data(m: re.Match) -> None:
        b = t.bench
        assert [int(m[k]) for k in ("train", "eval", "h", "w", "c", "k")] == \
            [b.train_size, b.eval_size, b.height, b.width, b.channels, b.num_classes]

    def attack(m: re.Match) -> None:
        close(m["eps"], t.bench.epsilon), close(m["step"], t.bench.step)
        assert int(m["steps"]) == t.bench.steps

    def universal(m: re.Match) -> None:
        assert int(m["count"]) == t.bench.universal_count
        close(m["xi"], t.bench.universal_xi), close(m["seconds"], t.universal_seconds)

    def suite_row(m: re.Match) -> None:
        k = int(m["rung"])
        net = t.refs[k - 1]
        assert m["name"] == net.name
        for kind in ("clean", "universal", "whitebox", "robust"):
            _check_acc(re.fullmatch(ACC.format("a"), m[kind]), "a", t.acc[(net.pk, kind)])
        if (net.pk, "universal-own") in t.acc:
            _check_acc(re.fullmatch(ACC.format("a"), m["own"]), "a", t.acc[(net.pk, "universal-own")])
        else:
            assert m["own"].strip() == "–"
        u, c = t.acc[(net.pk, "universal")][0], t.acc[(net.pk, "clean")][0]
        close(m["rob"], u / c)
        assert int(m["tier"]) == math.floor(10 * u + 1e-9)
        close(m["success"].rstrip("%"), t.success[net.pk], 100)
        assert int(m["level"]) == net.level
        assert net.level <= k - 1  # the revised rule: R_k reaches at most level k − 1

    def matrix_head(m: re.Match) -> None:
        assert m["names"].split(" | ") == names

    def matrix_row(m: re.Match) -> None:
        row = t.net(m["name"])
        cells = m["cells"].split(" | ")
        assert len(cells) == len(t.refs)
        for col, cell in zip(t.refs, cells):
            bold = cell.startswith("**")
            assert bold == (col.pk == row.pk)
            close(cell.strip("*"), t.matrix[(row.pk, col.pk)], 100)

    def grid_row(m: re.Match) -> None:
        values = m["cells"].split(" | ")
        grid = t.net("noise").report["grid"]  # the stored grid (GRID in the fixture)
        expected = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values()] for r in grid]
        assert values in expected and seen.setdefault("grid:" + values[0], 0) == 0
        seen["grid:" + values[0]] = 1

    def sigma(m: re.Match) -> None:
        noise = t.net("noise")
        close(m["sigma"], noise.report["sigma"]), close(m["drop"], noise.params["max_clean_drop"], 100)
        grid, drop = noise.report["grid"], noise.params["max_clean_drop"]
        best = max((r for r in grid if r["clean_acc"] >= grid[0]["clean_acc"] - drop),
                   key=lambda r: (r["probe_acc"], -r["sigma"]))
        assert best["sigma"] == noise.report["sigma"]  # the stored choice follows the stated rule

    def pca(m: re.Match) -> None:
        rep = t.net("pca").report
        assert (int(m["k"]), int(m["d"])) == (rep["components"], rep["input_dims"])
        close(m["var"], rep["variance_kept"], 100)

    def gan(m: re.Match) -> None:
        close(m["real"], t.net("gan-data").report["real_accuracy"], 100)

    def pca_charter(m: re.Match) -> None:
        rob = t.value("pca", "universal") / t.value("pca", "clean")
        close(m["charter"], CHARTER["pca"][2]), close(m["rob"], rob), close(m["near"], 0.1)
        assert m["verdict"] == ("yes" if abs(rob - 1) < 0.1 else "no")
        pc, cc = t.value("pca", "clean"), t.value("control", "clean")
        assert m["dir"] == ("costs" if cc >= pc else "gains")
        close(m["cost"], abs(cc - pc), 100), close(m["pc"], pc, 100), close(m["cc"], cc, 100)
        close(m["ccost"], CHARTER["control"][0] - CHARTER["pca"][0], 100)
        close(m["cp"], CHARTER["pca"][0], 100), close(m["ccontrol"], CHARTER["control"][0], 100)
        rep = t.net("pca").report
        assert (int(m["k"]), int(m["d"])) == (rep["components"], rep["input_dims"])

    def down(m: re.Match) -> None:
        recipe = {"50": "down50", "75": "down75"}[m["pct"]]
        c_rob = CHARTER["control"][1] / CHARTER["control"][0]
        close(m["cclean"], CHARTER[recipe][0], 100), close(m["crob"], CHARTER[recipe][2])
        close(m["cgain"], CHARTER[recipe][2] - c_rob)
        nc, cc = t.value(recipe, "clean"), t.value("control", "clean")
        rob = t.value(recipe, "universal") / nc
        crob = t.value("control", "universal") / cc
        close(m["clean"], nc, 100), close(m["control"], cc, 100)
        close(m["rob"], rob), close(m["crob_here"], crob), close(m["gain"], rob - crob)
        gain = rob - crob

        def pattern(costs: bool, g: float) -> str:
            if not costs:
                return "costs no clean accuracy"
            if g > 0.05:
                return "trades clean accuracy for a gain above 0.05"
            return "gives up clean accuracy for a gain of at most 0.05" if g > 0 else \
                "gives up clean accuracy and gains no universal robustness"

        here = pattern(nc < cc, gain)
        charter = pattern(CHARTER[recipe][0] < CHARTER["control"][0], CHARTER[recipe][2] - c_rob)
        same = "the same pattern" if here == charter else "a different pattern"
        assert m["verdict"] == f"here it {here}; in the charter it {charter} ({same}).", m["verdict"]

    def mnist(m: re.Match) -> None:
        close(m["zero"], t.zero, 100), close(m["one"], t.one, 100), close(m["cut"], t.clipped, 100)
        close(m["eps"], t.bench.epsilon), close(m["epspct"], t.bench.epsilon, 100)

    def spread(m: re.Match) -> None:
        clean = [t.acc[(n.pk, "clean")][0] for n in t.refs]
        univ = [t.acc[(n.pk, "universal")][0] for n in t.refs]
        close(m["control"], t.value("control", "clean"), 100), close(m["charter"], CHARTER["control"][0], 100)
        for key, value in (("clo", min(clean)), ("chi", max(clean)), ("ulo", min(univ)), ("uhi", max(univ))):
            close(m[key], value, 100)
        mostly = max(clean) - min(clean) < max(univ) - min(univ)
        assert m["verdict"] == ("differences in universal robustness come mostly from the universal accuracy."
                                if mostly else "clean and universal accuracy both move universal robustness.")

    from evaluator.services.report import LEVEL_RULE, TRANSFER_NOTE

    patterns: list[tuple[str, str, Callable[[re.Match], None], int]] = [
        ("header", r"Generated by `python manage\.py benchmark_report (?P<name>\S+) --output docs/BENCHMARK\.md` "
         r"from the stored results on (?P<date>\d{4}-\d\d-\d\d \d\d:\d\d) UTC, on (?P<platform>.+) with "
         r"(?P<cpus>\d+) CPUs, at commit (?P<commit>[0-9a-f]{40}|unknown)(?P<dirty> \(with uncommitted "
         r"changes\))?\. The ranking it reads was computed (?P<ranked>\d{4}-\d\d-\d\d \d\d:\d\d) UTC\. "
         r"Do not edit by hand\.", header, 1),
        ("data", r"- Data: (?P<train>\d+) train / (?P<eval>\d+) eval images, (?P<h>\d+)×(?P<w>\d+)×(?P<c>\d+), "
         r"(?P<k>\d+) classes\.", data, 1),
        ("attack", r"- Gradient attack: targeted, ε = (?P<eps>[\d.]+), α = (?P<step>[\d.]+), (?P<steps>\d+) "
         r"steps \(L∞\)\.", attack, 1),
        ("universal", r"- Universal perturbations: (?P<count>\d+), ξ = (?P<xi>[\d.]+), computed against the "
         r"control in (?P<seconds>\d+) s\.", universal, 1),
        ("definitions", re.escape(
            "Accuracies on the eval split with 95% Wilson intervals. Universal robustness = universal / clean "
            "accuracy; tier = floor(10 × universal accuracy); attack success = share of images on which the "
            "targeted attack reached its target."), lambda m: None, 1),
        ("level rule", re.escape(LEVEL_RULE), lambda m: None, 1),
        # The title names the benchmark (digits only in a real build's name, e.g. mnist-5k).
        ("title", rf"# Benchmark {re.escape(t.bench.name)}", lambda m: None, int(bool(re.search(r"\d", t.bench.name)))),
        ("charter heading", re.escape("## Against the charter (ImageNet, Inception v3 control)"), lambda m: None, 1),
        ("suite row", r"\| R(?P<rung>\d+) \| (?P<name>[^|]+) \| (?P<clean>[^|]+) \| (?P<universal>[^|]+) \| "
         r"(?P<own>[^|]+) \| (?P<whitebox>[^|]+) \| (?P<robust>[^|]+) \| (?P<rob>[\d.]+) \| (?P<tier>\d+) \| (?P<success>[\d.]+%) \| (?P<level>\d+) \|",
         suite_row, len(names)),
        ("pca", r"PCA keeps (?P<k>\d+) of (?P<d>\d+) components \((?P<var>[\d.]+)% of the train variance\)\.", pca, 1),
        ("gan", r"GAN-data: the classifier trained only on generated digits scores (?P<real>[\d.]+)% on the real "
         r"eval images at build time\.", gan, 1),
        ("matrix head", r"\| evaluated \\ attack of \| (?P<names>.+) \|", matrix_head, 1),
        ("matrix row", rf"\| (?P<name>{'|'.join(map(re.escape, names))}) \| (?P<cells>(\**[\d.]+\**)( \| \**[\d.]+\**)*) \|",
         matrix_row, len(names)),
        ("grid row", r"\| (?P<cells>[\d.]+( \| [\d.]+)*) \|", grid_row, len(t.net("noise").report["grid"])),
        ("sigma", r"Chosen σ = (?P<sigma>[\d.]+): the best probe accuracy among the σ whose clean accuracy is "
         r"within (?P<drop>[\d.]+) points of σ = 0's \(ties: the smaller σ\)\.", sigma, 1),
        ("pca charter", r"- \*\*Does PCA keep universal robustness near 1\*\* \(within (?P<near>[\d.]+)\)\? "
         r"Charter \(ImageNet\): (?P<charter>[\d.]+)\. Here: (?P<rob>[\d.]+), (?P<verdict>yes|no)\. PCA (?P<dir>costs|gains) "
         rf"(?P<cost>[\d.]+) points of clean accuracy here \((?P<pc>[\d.]+)% against the control's (?P<cc>[\d.]+)%\); "
         rf"in the charter it cost (?P<ccost>[\d.]+) points \((?P<cp>[\d.]+)% against (?P<ccontrol>[\d.]+)%\), "
         r"while here the projection keeps (?P<k>\d+) of (?P<d>\d+) input dimensions\.", pca_charter, 1),
        ("downsample", r"- \*\*downsample (?P<pct>50|75)%:\*\* charter (?P<cclean>[\d.]+)% clean, universal "
         r"robustness (?P<crob>[\d.]+) \((?P<cgain>[+-][\d.]+) against its control\)\. Here (?P<clean>[\d.]+)% "
         r"clean \(control (?P<control>[\d.]+)%\), universal robustness (?P<rob>[\d.]+) \(control "
         r"(?P<crob_here>[\d.]+), (?P<gain>[+-][\d.]+)\): (?P<verdict>.+)", down, 2),
        ("mnist", rf"- \*\*Where {re.escape(t.bench.name)} differs from the charter's ImageNet\.\*\* "
         rf"(?P<zero>[\d.]+)% of the eval pixels are exactly 0 and "
         rf"(?P<one>[\d.]+)% exactly 1, and clipping to \[0, 1\] cuts whatever part of a perturbation points "
         rf"out of that range: it removes (?P<cut>[\d.]+)% of the universal perturbations' L1 mass on the eval "
         rf"images\. The attack budget ε = (?P<eps>[\d.]+) is (?P<epspct>[\d.]+)% of the pixel range\.", mnist, 1),
        ("spread", rf"- \*\*Clean against universal accuracy\.\*\* The control scores (?P<control>[\d.]+)% clean "
         rf"\(charter: (?P<charter>[\d.]+)%\)\. The references' clean accuracies span (?P<clo>[\d.]+)% to "
         rf"(?P<chi>[\d.]+)% and their universal accuracies (?P<ulo>[\d.]+)% to (?P<uhi>[\d.]+)%, so "
         r"(?P<verdict>.+)", spread, 1),
    ]
    # The generalisation section (issue 15) is checked line by line by its own test module.
    from tests.test_generalisation import check_generalisation, split_generalisation

    text, section = split_generalisation(text)
    check_generalisation(section)
    # So is the validity section (issue 12): tests/validity_check.py.
    from tests.validity_check import check_validity, split_validity

    text, section = split_validity(text)
    check_validity(section, t.bench)
    match_lines(text, patterns)
    assert f"- \\* {TRANSFER_NOTE}" in text.splitlines()
    assert "universal*" in text and "fitted against the control only" in TRANSFER_NOTE


@pytest.fixture
def generated(tmp_path: Path) -> tuple[str, Truth]:
    bench = _tiny_benchmark()
    out = tmp_path / "BENCHMARK.md"
    start = datetime.now(timezone.utc)
    call_command("benchmark_report", "report", "--output", str(out))
    end = datetime.now(timezone.utc)
    return out.read_text(), Truth.measure(bench, start, end)


def test_every_number_in_the_report_matches_the_stored_results(generated) -> None:
    text, truth = generated
    check_report(text, truth)


def test_every_digit_of_the_report_is_checked(generated) -> None:
    """Change each digit in turn (by 5, mod 10): the check must fail every time."""
    text, truth = generated
    check_report(text, truth)
    assert_every_digit_checked(text, lambda wrong: check_report(wrong, truth))


def test_report_refuses_a_benchmark_without_ladder() -> None:
    from django.core.management.base import CommandError

    Benchmark.objects.create(name="empty")
    with pytest.raises(CommandError, match="no ladder"):
        call_command("benchmark_report", "empty")



def test_pages_say_universal_accuracy_is_a_transfer_figure(client) -> None:
    """Item 3 of issue 16: where the number is shown, say it was fitted on the control."""
    suite = fake_suite(references=2, uploads=1, name="transfer")
    Network.objects.filter(pk=suite.references[0].pk).update(recipe="control")
    bench = client.get("/benchmark/?benchmark=transfer").content.decode()
    assert "fitted on the control only: for every other network this is a transfer figure" in bench
    upload = client.get(f"/networks/{suite.uploads[0].pk}/").content.decode()
    assert "A transfer figure: the universal perturbations are fitted on the control network only" in upload
    control = client.get(f"/networks/{suite.references[0].pk}/").content.decode()
    assert "fitted on this network (the control)" in control
