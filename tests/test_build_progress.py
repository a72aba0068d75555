"""The time left that `manage.py build_benchmark` prints while it builds (issue 14).

The command runs for real on a built-in benchmark whose dataset is not stored yet (as at
first start); only the heavy parts are stubbed: the dataset is a small fake one and
"training" a reference writes its row and a recorded duration at once. The build stops
on its last reference, so what is checked is what the console and the selector behind
the pages say in the middle of a build: that it is building, never "the build has not
started", and a time left from what was measured here or an honest reason why not.
"""

from __future__ import annotations

import dataclasses
import io
import re

import pytest
from django.core.management import CommandError, call_command

from devkit.fakes import fake_dataset
from evaluator.engine import builtins
from evaluator.engine.progress_eta import FIRST_RUN
from evaluator.services import benchmarks
from evaluator.services import progress as timing
from leaderboard import progress_selectors
from leaderboard.models import Benchmark, Network

NAME = builtins.MNIST5K
RECIPES = ("control", "down50", "adv-trained")
TRAINING_S = 60.0  # each stubbed training is recorded as having taken this long
NOT_STARTED = "the build has not started"


@pytest.fixture
def stubbed_build(monkeypatch, settings, tmp_path) -> list[dict]:
    """Stub the dataset's source and each reference's training; the build's own code
    (its state, steps, plan and the dataset it stores) runs as it does in production.
    Returns what the selector said at the start of each training, read from a fresh row."""
    settings.MEDIA_ROOT = tmp_path / "media"  # the dataset it stores goes with the test
    spec = builtins.BUILTINS[NAME]
    monkeypatch.setitem(builtins.BUILTINS, NAME, dataclasses.replace(spec, load=lambda: fake_dataset(NAME)))
    seen: list[dict] = []

    def trained(*, benchmark: Benchmark, recipe: str, scale: float, report) -> Network:
        seen.append(progress_selectors.build_progress(Benchmark.objects.get(pk=benchmark.pk)))
        if recipe == RECIPES[-1]:
            raise benchmarks.BuildError("stopped by the test in the middle of its build")
        network = Network.objects.create(benchmark=benchmark, name=recipe, is_reference=True, recipe=recipe,
                                         archive=f"networks/{recipe}.zip")
        timing.stage_duration_record(benchmark_id=benchmark.pk, network_id=network.pk, is_reference=True,
                                     stage=timing.BUILD_TRAINING, seconds=TRAINING_S)
        return network

    monkeypatch.setattr(benchmarks, "reference_build", trained)
    return seen


@pytest.mark.django_db
def test_a_build_in_progress_says_it_is_building_and_its_time_left(stubbed_build) -> None:
    out = io.StringIO()
    with pytest.raises(CommandError, match="stopped by the test"):
        call_command("build_benchmark", NAME, "--recipes", ",".join(RECIPES), stdout=out)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("[")]
    assert lines, out.getvalue()
    assert not [line for line in lines if NOT_STARTED in line], lines

    # What the pages and the API read at each training: building, with the whole plan.
    for i, info in enumerate(stubbed_build):
        assert info["state"] == Benchmark.State.BUILDING and info["step"] == "training"
        assert info["references"] == {"total": len(RECIPES), "trained": i, "ranked": 0}
        assert NOT_STARTED not in info["estimate"]["text"]
    # Nothing timed here before the first training: no number, and it says why.
    assert stubbed_build[0]["estimate"]["seconds"] is None
    assert stubbed_build[0]["estimate"]["text"] == f"no estimate yet: {FIRST_RUN}"
    # Once trainings were timed: the current one's median less its time spent, a lower
    # bound since the universal set and the pipelines were never timed here.
    last = stubbed_build[-1]["estimate"]
    assert last["seconds"] == pytest.approx(TRAINING_S, abs=10.0) and last["lower_bound"]

    last_line = next(line for line in lines if f"({len(RECIPES)}/{len(RECIPES)})" in line)
    assert re.fullmatch(r"\[\s*\d+%\] training reference adv-trained \(3/3\) · 2 of 3 references trained, "
                        r"0 ranked · at least .+ left \(not timed on this machine yet: .+\)", last_line), last_line
    bench = Benchmark.objects.get(name=NAME)
    assert bench.state == Benchmark.State.FAILED and bench.data_file  # the dataset was stored
