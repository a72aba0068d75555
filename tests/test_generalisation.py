"""Issue 15, part 3: do the ladder's findings generalise across datasets and architectures?

Kendall's τ and its p-value against scipy.stats.kendalltau on hand-built orders; the
ladder comparison (moves, sides of the control) against hand-worked answers; the MLP
backbone (mnist-5k's records unchanged, no convolution in an MLP reference); a
tiny-scale build of mnist-5k-mlp through the real command; the report section (every
number recomputed from the stored rows, every digit mutated) and the page section,
with and without a second built benchmark.
"""

from __future__ import annotations

import itertools
import json
import re
import time

import numpy as np
import pytest
from django.core.management import call_command
from scipy import stats

from evaluator.engine import builtins
from evaluator.engine.generalisation import MOVE_MIN, Rung, compare_ladders, compare_pair, kendall_tau
from evaluator.services.generalisation import EXPLANATION, HEADING
from leaderboard.models import Benchmark, Network
from tests.report_checks import assert_every_digit_checked



# --------------------------------------------------------------------------- τ against scipy


def _scipy(x, y, method: str = "auto"):
    return stats.kendalltau(x, y, method=method)


@pytest.mark.parametrize("y", [
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],  # identical
    [10, 9, 8, 7, 6, 5, 4, 3, 2, 1],  # reversed
    [2, 1, 3, 4, 5, 6, 7, 8, 9, 10],  # one swap
    [1, 3, 2, 5, 4, 7, 6, 9, 8, 10],  # four neighbour swaps
    [6, 2, 9, 1, 10, 4, 3, 8, 5, 7],  # unrelated
    [1, 2, 3, 4, 5, 10, 9, 8, 7, 6],
])
def test_tau_of_two_ladder_orders_matches_scipy(y) -> None:
    x = list(range(1, 11))
    got, ref = kendall_tau(x, y), _scipy(x, y)
    assert got.method == "exact" and got.n == 10
    assert got.tau == pytest.approx(ref.statistic, abs=1e-12)
    assert got.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert got.p_value == pytest.approx(_scipy(x, y, "exact").pvalue, rel=1e-9)
    # τ-a without ties: (concordant − discordant) / pairs, counted here by brute force.
    sign = [np.sign((x[i] - x[j]) * (y[i] - y[j])) for i, j in itertools.combinations(range(10), 2)]
    assert (got.concordant, got.discordant) == (sign.count(1), sign.count(-1))


def test_tau_matches_scipy_on_many_random_orders() -> None:
    rng = np.random.default_rng(7)
    for n in range(3, 14):
        for _ in range(20):
            x, y = rng.permutation(n).tolist(), rng.permutation(n).tolist()
            got, ref = kendall_tau(x, y), _scipy(x, y)
            assert got.tau == pytest.approx(ref.statistic, abs=1e-12)
            assert got.p_value == pytest.approx(ref.pvalue, rel=1e-9), (x, y)


def test_tau_with_ties_uses_the_normal_approximation_like_scipy() -> None:
    rng = np.random.default_rng(3)
    for n in (5, 8, 12, 40):
        for _ in range(10):
            x, y = rng.integers(0, 4, n).tolist(), rng.integers(0, 6, n).tolist()
            if len(set(x)) < 2 or len(set(y)) < 2:
                continue
            got, ref = kendall_tau(x, y), _scipy(x, y)
            assert got.method == "asymptotic"
            assert got.tau == pytest.approx(ref.statistic, abs=1e-12)
            assert got.p_value == pytest.approx(ref.pvalue, rel=1e-9)
            assert got.p_value == pytest.approx(_scipy(x, y, "asymptotic").pvalue, rel=1e-9)


def test_tau_refuses_what_is_undefined() -> None:
    with pytest.raises(ValueError, match="constant"):
        kendall_tau([1, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="one value per item"):
        kendall_tau([1, 2], [1, 2, 3])


# --------------------------------------------------------------------------- ladder comparison


def _ladder(order: list[str]) -> list[Rung]:
    return [Rung(name, k) for k, name in enumerate(order, start=1)]


def test_pair_comparison_finds_moves_and_sides_of_the_control() -> None:
    a = ["down75", "control", "pca", "noise", "mtl", "adv-trained"]
    b = ["pca", "control", "down75", "mtl", "noise", "adv-trained", "gan-data"]  # gan-data only on b
    pair = compare_pair("A", _ladder(a), "B", _ladder(b))
    assert pair.recipes == a  # shared, in A's order; gan-data left out
    ranks_b = {name: k for k, name in enumerate([r for r in b if r in a], start=1)}
    assert [(m.recipe, m.rank_a, m.rank_b) for m in pair.moves] == [(r, k, ranks_b[r]) for k, r in enumerate(a, 1)]
    assert {m.recipe for m in pair.moved} == {"down75", "pca"}  # 1 → 3 and 3 → 1: two places each
    assert all(abs(m.shift) < MOVE_MIN for m in pair.moves if m.recipe not in {"down75", "pca"})
    # down75 was below the control and is above it on B; pca the other way round.
    assert [(m.recipe, m.above_control_a, m.above_control_b) for m in pair.changed_side] == [
        ("down75", False, True), ("pca", True, False)]
    ref = _scipy([a.index(r) for r in a], [ranks_b[r] for r in a])
    assert pair.tau.tau == pytest.approx(ref.statistic) and pair.tau.p_value == pytest.approx(ref.pvalue)


def test_compare_ladders_rows_and_verdicts() -> None:
    result = compare_ladders({
        "mnist-5k": _ladder(["control", "pca", "noise", "down50"]),
        "digits-8x8": _ladder(["pca", "control", "noise", "down50"]),
        "mnist-5k-mlp": _ladder(["control", "noise", "pca"]),
    })
    assert result.benchmarks == ["mnist-5k", "digits-8x8", "mnist-5k-mlp"]
    assert [p.a + "/" + p.b for p in result.pairs] == ["mnist-5k/digits-8x8", "mnist-5k/mnist-5k-mlp",
                                                       "digits-8x8/mnist-5k-mlp"]
    rows = {r.recipe: r for r in result.rows}
    assert [r.recipe for r in result.rows] == ["control", "pca", "noise", "down50"]
    assert rows["control"].verdict == "the control"
    assert rows["noise"].verdict == "above the control everywhere"
    assert rows["pca"].verdict == "depends on the benchmark"
    assert rows["down50"].rungs["mnist-5k-mlp"] is None and rows["down50"].verdict == "above the control everywhere"
    assert result.pairs[1].tau.n == 3  # mnist-5k/mlp share three references
    with pytest.raises(ValueError):
        compare_ladders({"mnist-5k": _ladder(["control", "pca"])})


# --------------------------------------------------------------------------- MLP backbone


def test_backbone_is_recorded_only_when_overridden() -> None:
    from evaluator.engine.defenses import RECIPES

    control = RECIPES["control"]
    assert control.resolve({}) == dict(control.defaults)  # mnist-5k: the CNN, nothing added
    mlp = control.resolve(builtins.MLP_BACKBONE)
    assert mlp["backbone"] == "mlp" and mlp["mlp_units"] == [256] and "conv_filters" not in mlp
    with pytest.raises(ValueError, match="backbone must be one of"):
        control.resolve({"backbone": "transformer"})
    recorded = json.loads((builtins_fixture("mnist-5k-mlp")).read_text())
    assert all(r["params"]["backbone"] == "mlp" for r in recorded["recipes"].values())


def builtins_fixture(name: str):
    from evaluator.engine.defenses.record import fixture_document, fixture_path

    path = fixture_path(name)
    # Regenerate with `python -m evaluator.engine.defenses.record` after changing a recipe.
    assert json.loads(path.read_text()) == json.loads(json.dumps(fixture_document(name)))
    return path


@pytest.mark.parametrize("recipe", ["control", "mtl"])
def test_mlp_references_have_no_convolution(recipe: str, mnist_small, tmp_path) -> None:
    from evaluator.engine.datasets import Dataset, draw_targets
    from evaluator.engine.defenses import RECIPES, BuildContext
    from tests.test_defenses import _graph_ops, _serve

    x_train, y_train, x_eval, y_eval = mnist_small
    ds = Dataset("m", x_train[:300], y_train[:300], x_eval[:50], y_eval[:50], draw_targets(y_eval[:50], 10, 1),
                 tuple(str(i) for i in range(10)), (28, 28, 1))
    result = RECIPES[recipe].build(BuildContext(ds, tmp_path / recipe, scale=0.05, params=builtins.MLP_BACKBONE))
    ops = _graph_ops(result.model_dir)
    assert "Conv2D" not in ops and "MatMul" in ops
    assert result.params["backbone"] == "mlp"
    assert _serve(result.model_dir)(ds.x_eval[:5]).shape == (5, 10)


@pytest.mark.django_db
@pytest.mark.slow
def test_tiny_build_of_mnist_5k_mlp_through_the_command(capsys) -> None:
    """`build_benchmark mnist-5k-mlp` at the tiny scale: mnist-5k's images and targets,
    MLP references, the same progress lines as the main build."""
    from evaluator.engine.datasets import load_dataset, load_mnist5k, with_targets
    from evaluator.services import secret, storage

    started = time.perf_counter()
    call_command("build_benchmark", "mnist-5k-mlp", "--recipes", "control,down50", "--scale", "0.05")
    seconds = time.perf_counter() - started
    out = capsys.readouterr().out
    assert "[  0%] dataset" in out and "training reference control (1/2)" in out and "[100%] ready" in out
    bench = Benchmark.objects.get(name="mnist-5k-mlp")
    assert bench.state == Benchmark.State.READY and len(bench.ladder) == 2
    assert (bench.epsilon, bench.step, bench.steps, bench.universal_xi) == (0.3, 0.01, 40, 0.3)
    stored = load_dataset(storage.media_path(bench.data_file))
    expected = with_targets(load_mnist5k(), secret.benchmark_seed("mnist-5k", "targets"))
    np.testing.assert_array_equal(stored.x_eval, expected.x_eval)
    np.testing.assert_array_equal(stored.targets, expected.targets)  # mnist-5k's secret targets
    for net in Network.objects.filter(benchmark=bench, is_reference=True):
        assert net.params["backbone"] == "mlp" and "conv_filters" not in net.params, net.params
        assert net.params["epochs"] == 1 and net.status == Network.Status.RANKED, (net.status, net.reason)
        assert net.description.endswith("instead of the CNN."), net.description
    print(f"tiny mnist-5k-mlp build: {seconds:.1f} s")


# --------------------------------------------------------------------------- stored ladders


def fake_builtin(name: str, order: list[str]):
    """A ready fake benchmark named like a built-in one whose ladder is `order`."""
    from tests.fakes import fake_suite

    suite = fake_suite(references=len(order), name=name)
    bench = suite.benchmark
    for pk, recipe in zip(bench.ladder, order):
        net = Network.objects.get(pk=pk)
        # A robust accuracy like the ranking stores (the white-box numbers stand in for it),
        # except on the first rung, which shows the cell without one.
        robust = {} if pk == bench.ladder[0] else {
            "robust_accuracy": net.whitebox_accuracy, "robust_low": net.whitebox_low, "robust_high": net.whitebox_high}
        Network.objects.filter(pk=pk).update(name=recipe, recipe=recipe, **robust)
    return bench


def _truth_rungs(name: str) -> dict[str, tuple[int, Network]]:
    bench = Benchmark.objects.get(name=name)
    nets = {n.pk: n for n in Network.objects.filter(benchmark=bench, is_reference=True)}
    return {nets[pk].recipe: (k, nets[pk]) for k, pk in enumerate(bench.ladder, start=1)}


def _close(printed: str, true: float, scale: float = 1.0) -> None:
    decimals = len(printed.split(".")[1].split("e")[0]) if "." in printed else 0
    if "e" in printed:
        mantissa, exponent = printed.split("e")
        assert abs(float(mantissa) - true / 10 ** int(exponent)) <= 0.5 * 10 ** -decimals + 1e-12, (printed, true)
        return
    assert abs(float(printed) - true * scale) <= 0.5 * 10 ** -decimals + 1e-9, (printed, true * scale)


def check_generalisation(lines: list[str]) -> None:
    """Every line of the report's section that holds a digit, checked against the stored
    ladders and robust accuracies (τ and p recomputed with scipy)."""
    built = [b for b in builtins.BUILTINS
             if Benchmark.objects.filter(name=b, state=Benchmark.State.READY).exists() and
             len(Benchmark.objects.get(name=b).ladder) >= 2]
    rungs = {b: _truth_rungs(b) for b in built}
    commands = {f"`python manage.py build_benchmark {b}`" for b in builtins.BUILTINS if b not in built}
    header_names = None
    seen_pairs: set[tuple[str, str]] = set()
    seen_rows: set[str] = set()
    for line in lines:
        if not re.search(r"\d", line):
            continue
        if line in (HEADING, EXPLANATION):
            continue
        if m := re.fullmatch(r"The same ten reference defenses are built on (?P<names>.+): a second dataset and a "
                             r"second architecture\. Fewer than two of them are built, so there is nothing to "
                             r"compare yet\. Build:", line):
            assert len(built) < 2 and m["names"] == ", ".join(builtins.BUILTINS)
            continue
        if m := re.fullmatch(r"- (?P<cmd>`[^`]+`): (?P<q>.+)", line):
            assert len(built) < 2 and m["cmd"] in commands
            commands.discard(m["cmd"])
            continue
        if m := re.fullmatch(r"Not built yet: (?P<items>.+)\.", line):
            shown = re.findall(r"`[^`]+`", m["items"])
            assert set(shown) == commands and len(shown) == len(commands)
            commands.clear()
            continue
        if m := re.fullmatch(r"\| reference \| (?P<names>.+) \| against the control \|", line):
            header_names = m["names"].split(" | ")
            assert header_names == built
            continue
        if m := re.fullmatch(r"\|---\|(---\|)+", line):
            continue
        if m := re.fullmatch(r"\| (?P<recipe>[a-z0-9-]+) \| (?P<cells>.+) \| (?P<verdict>[^|]+) \|", line):
            assert header_names is not None
            cells = m["cells"].split(" | ")
            assert len(cells) == len(header_names) and m["recipe"] not in seen_rows
            seen_rows.add(m["recipe"])
            for bench, cell in zip(header_names, cells):
                if m["recipe"] not in rungs[bench]:
                    assert cell == "–"
                    continue
                k, net = rungs[bench][m["recipe"]]
                if net.robust_accuracy is None:
                    assert cell == f"R{k}", (cell, k)
                    continue
                c = re.fullmatch(r"R(?P<k>\d+), (?P<v>[\d.]+)% \[(?P<lo>[\d.]+), (?P<hi>[\d.]+)\]", cell)
                assert c and int(c["k"]) == k, (cell, k)
                for key, value in (("v", net.robust_accuracy), ("lo", net.robust_low), ("hi", net.robust_high)):
                    _close(c[key], value, 100)
            continue
        if m := re.fullmatch(r"- \*\*(?P<a>\S+) against (?P<b>\S+)\*\* \((?P<n>\d+) shared references\): "
                             r"Kendall's τ = (?P<tau>-?[\d.]+), p = (?P<p>[\d.e+-]+) \((?P<method>exact|asymptotic)\)"
                             r"; (?P<moved>.+?); (?P<sides>(on the other side of the control: .+|every reference "
                             r"stays on its side of the control))\.", line):
            a, b = m["a"], m["b"]
            assert built.index(a) < built.index(b) and (a, b) not in seen_pairs
            seen_pairs.add((a, b))
            shared = [r for r, _ in sorted(rungs[a].items(), key=lambda kv: kv[1][0]) if r in rungs[b]]
            assert int(m["n"]) == len(shared)
            ra = {r: i for i, r in enumerate(shared, start=1)}
            rb = {r: i for i, r in enumerate(sorted(shared, key=lambda r: rungs[b][r][0]), start=1)}
            ref = stats.kendalltau([ra[r] for r in shared], [rb[r] for r in shared])
            _close(m["tau"], ref.statistic), _close(m["p"], ref.pvalue)
            assert m["method"] == "exact"
            moved = [f"{r} ({ra[r]} → {rb[r]})" for r in shared if abs(rb[r] - ra[r]) >= 2]
            assert m["moved"] == ("moved by 2 or more places: " + ", ".join(moved) if moved
                                  else "no reference moved by 2 or more places"), m["moved"]

            def side(bench: str, r: str) -> str:
                return "above" if rungs[bench][r][0] > rungs[bench]["control"][0] else "below"

            flips = [f"{r} ({side(a, r)} → {side(b, r)})" for r in shared
                     if r != "control" and "control" in shared and side(a, r) != side(b, r)]
            assert m["sides"] == ("on the other side of the control: " + ", ".join(flips) if flips
                                  else "every reference stays on its side of the control"), m["sides"]
            continue
        raise AssertionError(f"a line with numbers that no check covers: {line!r}")
    if len(built) >= 2:
        assert seen_pairs == set(itertools.combinations(built, 2))
        assert seen_rows == {r for b in built for r in rungs[b]}
    assert not commands, f"commands not shown: {commands}"


def split_generalisation(text: str) -> tuple[str, list[str]]:
    """(the report without the generalisation section, the section's lines)."""
    lines = text.splitlines()
    start = lines.index(HEADING)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[:start] + lines[end:]), lines[start:end]


ORDER_MNIST = ["down75", "gan-data", "control", "pca", "noise", "down50", "autoencoder", "conv-autoencoder", "mtl",
               "adv-trained"]
ORDER_DIGITS = ["gan-data", "down75", "control", "noise", "pca", "mtl", "down50", "conv-autoencoder", "autoencoder",
                "adv-trained"]


@pytest.mark.django_db
def test_report_section_every_number_checked(tmp_path) -> None:
    fake_builtin("mnist-5k", ORDER_MNIST)
    fake_builtin("digits-8x8", ORDER_DIGITS)
    out = tmp_path / "BENCHMARK.md"
    call_command("benchmark_report", "mnist-5k", "--output", str(out))
    _, section = split_generalisation(out.read_text())
    check_generalisation(section)
    text = "\n".join(section)
    assert "| pca | R4, " in text and "`python manage.py build_benchmark mnist-5k-mlp`" in text
    # Every digit of the section changed in turn (by 5, mod 10): the check must notice.
    assert_every_digit_checked(text, lambda wrong: check_generalisation(wrong.splitlines()))


# --------------------------------------------------------------------------- page


@pytest.mark.django_db
def test_page_section_says_how_to_build_when_one_benchmark_is_built(client) -> None:
    fake_builtin("mnist-5k", ORDER_MNIST)
    html = client.get("/benchmark/").content.decode()
    assert 'id="generalisation"' in html and "Fewer than two of these benchmarks are built" in html
    for name in ("digits-8x8", "mnist-5k-mlp"):
        assert f"<code>python manage.py build_benchmark {name}</code>" in html
    assert "fig-generalisation-ladders" not in html and "Kendall's τ =" not in html


@pytest.mark.django_db
def test_page_section_compares_two_built_ladders(client) -> None:
    fake_builtin("mnist-5k", ORDER_MNIST)
    fake_builtin("digits-8x8", ORDER_DIGITS)
    html = client.get("/benchmark/").content.decode()
    ref = stats.kendalltau(list(range(10)), [ORDER_DIGITS.index(r) for r in ORDER_MNIST])
    assert f"Kendall's τ = {ref.statistic:.2f}, p = {ref.pvalue:.3f} (exact)" in html
    assert "<strong>mnist-5k against digits-8x8</strong> (10 shared references)" in html
    # pca sits at R4 on mnist-5k and R5 on digits-8x8: both cells, in that order, in its row.
    row = re.search(r"<tr><td>pca</td>(.*?)</tr>", html, re.S).group(1)
    assert re.findall(r"<td>R(\d+)", row) == ["4", "5"]
    assert "down50 (6 → 7)" not in html and "autoencoder (7 → 9)" in html
    figure = json.loads(re.search(r'id="fig-generalisation-ladders">(.*?)</script>', html, re.S).group(1))
    traces = {t["name"]: t for t in figure["data"]}
    assert traces["pca"]["y"] == [4, 5] and traces["pca"]["x"] == ["mnist-5k", "digits-8x8"]
    tau = json.loads(re.search(r'id="fig-generalisation-tau">(.*?)</script>', html, re.S).group(1))
    assert tau["data"][0]["z"][0][1] == pytest.approx(ref.statistic, abs=1e-4)
    assert "vendor/plotly-cartesian" in html
    assert "<code>python manage.py build_benchmark mnist-5k-mlp</code>" in html  # still missing
    # An imported benchmark's page has no such section (it is about the built-in three).
    fake_builtin("other", ORDER_MNIST[:3])
    assert 'id="generalisation"' not in client.get("/benchmark/?benchmark=other").content.decode()
