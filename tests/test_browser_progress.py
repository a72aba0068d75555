"""Progress that tells the truth, in a real browser (issue 14): a real build step runs
while the leaderboard is open in Chromium, and what its banner shows, sampled every
200 ms, never goes backwards and names the reference it is working on.

The build runs in this thread (the live server answers the page from its own thread
over the same test database: `reads_beside_writes`); the page samples itself into
sessionStorage, which outlives the reloads the page does when a reference is ranked and
when the build ends.
"""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command

from evaluator.services import benchmarks
from leaderboard.models import Benchmark, Network
from tests.conftest import mini_dataset_npz
from tests.test_browser import chrome, session  # noqa: F401 - fixtures used by name

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RECIPES = ["control", "down50"]
# Runs before the page's own script on every load: one sample per change of the banner.
SAMPLER = """
(() => {
  const KEY = "progress-samples";
  const take = () => {
    const build = document.querySelector("#build");
    const percent = build && build.querySelector(".build-percent");
    if (!percent) return;
    const sample = {
      percent: parseInt(percent.textContent, 10),
      bar: Number(build.querySelector(".progress").getAttribute("aria-valuenow")),
      stage: build.querySelector(".stage").textContent,
      counts: build.querySelector(".build-counts").textContent,
      eta: build.querySelector(".eta").textContent,
    };
    const all = JSON.parse(sessionStorage.getItem(KEY) || "[]");
    const last = all[all.length - 1];
    if (!last || ["percent", "stage", "counts", "eta"].some((k) => last[k] !== sample[k])) {
      all.push(sample);
      sessionStorage.setItem(KEY, JSON.stringify(all));
    }
  };
  document.addEventListener("DOMContentLoaded", take);
  setInterval(take, 200);
})();
"""
ETA = re.compile(r"^(no estimate yet: .+|(at least )?about \d+ (s|min|h)( \d+ min)? left.*|finishing .+)$")
COUNTS = re.compile(r"^(\d) of 2 references trained, (\d) ranked$")


@pytest.fixture
def reads_beside_writes(live_server):
    """The live server reads while the build writes. On the test database (in-memory
    SQLite, shared cache) a connection that reads a table another one is writing gets
    "database table is locked" at once, where a real deployment's file database waits
    (and PostgreSQL never blocks a reader): the server's connection reads uncommitted
    rows instead of taking read locks, so neither side is refused."""
    shared = live_server.thread.connections_override.get("default")
    if shared is None:  # not SQLite in memory: nothing to do
        yield
        return
    with shared.cursor() as cursor:
        cursor.execute("PRAGMA read_uncommitted = 1")
    yield
    with shared.cursor() as cursor:
        cursor.execute("PRAGMA read_uncommitted = 0")


def test_build_banner_progress_is_monotonic_and_names_the_reference(session, reads_beside_writes, tmp_path,
                                                                     monkeypatch) -> None:
    npz = mini_dataset_npz(tmp_path / "live.npz", n_train=200, n_eval=100)
    call_command("import_benchmark", "live", "--npz", str(npz), "--steps", "5")
    bench = Benchmark.objects.get(name="live")
    # The detection and vector-space analysis after the build is no part of its progress.
    monkeypatch.setattr(benchmarks, "benchmark_analyse", lambda **kwargs: None)
    page = session.page
    page.add_init_script(SAMPLER)
    session.go("/?benchmark=live")
    assert page.locator("#build").get_attribute("data-poll") == "/api/benchmarks/live"

    lines: list[str] = []
    benchmarks.benchmark_build(benchmark=bench, recipes=RECIPES, scale=0.05, report=lines.append)
    bench.refresh_from_db()
    assert bench.state == Benchmark.State.READY
    # The page notices the end of the build by itself and reloads without the banner.
    page.wait_for_selector("#build", state="detached", timeout=20000)
    samples = page.evaluate("JSON.parse(sessionStorage.getItem('progress-samples') || '[]')")

    reported = {re.sub(r"^\[\s*\d+%\] ", "", line) for line in lines}
    assert len(samples) >= 4, samples
    percents = [s["percent"] for s in samples]
    assert percents == sorted(percents), f"the percent went backwards: {percents}"
    assert len(set(percents)) >= 3 and percents[-1] <= 100
    # Before the build starts it has chosen no references; from then on, k of 2.
    counted = [COUNTS.match(s["counts"]) for s in samples if s["counts"] != "References not chosen yet"]
    assert counted and all(counted), [s["counts"] for s in samples]
    trained, ranked = [int(m.group(1)) for m in counted], [int(m.group(2)) for m in counted]
    assert trained == sorted(trained) and ranked == sorted(ranked)
    for sample in samples:
        assert sample["bar"] == sample["percent"]
        assert ETA.match(sample["eta"]), sample["eta"]
        # What the banner says is a stage the build really went through (or its wait).
        assert sample["stage"] in reported | {"waiting for a worker"}, sample["stage"]
    naming = [s["stage"] for s in samples if any(recipe in s["stage"] for recipe in RECIPES)]
    assert len(set(naming)) >= 2, f"the stage named no reference: {[s['stage'] for s in samples]}"
    # Both references are on the board now, ranked.
    for recipe in RECIPES:
        ref = Network.objects.get(benchmark=bench, recipe=recipe)
        assert ref.status == Network.Status.RANKED
        assert page.locator(f"#leaderboard tr[data-id='{ref.pk}']").count() == 1
