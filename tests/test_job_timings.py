"""Job timings as numbers (Job.timings, read through evaluator.selectors): what bench/
reads instead of parsing job logs, checked against the log lines written beside them on
the session's mini benchmark (its references went through the real pipeline)."""

from __future__ import annotations

import re

import pytest

from evaluator.models import Job
from evaluator.selectors import job_timings, network_job_timings, reference_model_dir
from evaluator.services import storage
from leaderboard.models import Network

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def _references(bench) -> list[Network]:
    return list(Network.objects.filter(benchmark=bench, is_reference=True).order_by("pk"))


def test_an_evaluate_job_records_its_phases_and_sandbox_seconds(mini_benchmark) -> None:
    refs = _references(mini_benchmark)
    assert len(refs) == 3
    for ref in refs:
        timings = network_job_timings(network=ref)
        assert timings, ref.name
        for t in timings:
            job = Job.objects.get(pk=t.job_id)
            # The log says the same in words: "phases: validation 1.23 s, ..." and, per
            # attempt, "ok in 4.5 s, peak 812 MB".
            (line,) = re.findall(r"^phases: (.*)$", job.log, flags=re.M)
            logged = {name: float(s) for name, s in re.findall(r"(\w+) ([\d.]+) s", line)}
            assert set(t.phases) == set(logged) and "cross" in t.phases
            for name, seconds in t.phases.items():
                assert seconds == pytest.approx(logged[name], abs=0.005)
            ok = re.findall(r"^ok in ([\d.]+) s, peak (\d+) MB", job.log, flags=re.M)
            assert t.sandbox_seconds == pytest.approx(float(ok[-1][0]), abs=0.05)
            assert t.sandbox_peak_mb == pytest.approx(float(ok[-1][1]), abs=0.5)
            last_attempt = [line for line in job.log.splitlines() if line.startswith("attempt ")][-1]
            assert t.warm is ("(warm child)" in last_attempt)
            # Phases happen inside the child, the child inside the job.
            assert 0 < sum(t.phases.values()) <= t.sandbox_seconds <= t.seconds
            # Within 2 ms: rows reloaded from the session's dump (after a flushing test) keep
            # their times to the millisecond (Django's JSON encoder).
            assert t.seconds == pytest.approx((t.finished_at - t.started_at).total_seconds(), abs=0.002)


def test_a_job_without_timings_reads_as_unknown(mini_benchmark) -> None:
    job = Job.objects.create(kind=Job.Kind.EVALUATE, benchmark=mini_benchmark)
    t = job_timings(job=job)
    assert (t.sandbox_seconds, t.sandbox_peak_mb, t.phases, t.warm, t.seconds) == (None, None, {}, False, None)


def test_the_controls_model_folder(mini_benchmark) -> None:
    (control,) = [n for n in _references(mini_benchmark) if n.recipe == "control"]
    folder = reference_model_dir(benchmark="mini", recipe="control")
    assert folder == storage.media_path(control.info["model_dir"])
    assert (folder / "saved_model.pb").is_file()
    with pytest.raises(LookupError, match="no built 'pca' reference"):
        reference_model_dir(benchmark="mini", recipe="pca")
