"""docs/BENCHMARK.md is generated from stored numbers."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from leaderboard.models import Network
from tests.fakes import fake_suite

pytestmark = pytest.mark.django_db


def test_report_table_carries_the_stored_numbers(tmp_path) -> None:
    suite = fake_suite(references=3)
    out = tmp_path / "BENCHMARK.md"
    call_command("benchmark_report", "mnist-5k", "--output", str(out))
    text = out.read_text()
    for pk in suite.benchmark.ladder:
        net = Network.objects.get(pk=pk)
        assert f"| {net.name} | {100 * net.clean_accuracy:.1f}% [" in text
        assert f"| {net.level} |" in text
    assert "Cross-attack matrix" in text
    # The matrix diagonal is each reference's white-box accuracy, in bold.
    first = Network.objects.get(pk=suite.benchmark.ladder[0])
    assert f"**{100 * first.whitebox_accuracy:.1f}**" in text
