"""Run the report's own consistency checks against a real build instead of the tests' fakes:

    VAR_DIR=/path/to/var PYTHONPATH=. DJANGO_SETTINGS_MODULE=leaderboard.settings \
        .venv/bin/python tests/report_on_build.py mnist-5k

Every number of docs/BENCHMARK.md as generated now from that build is parsed back and
recomputed from the stored rows and arrays (tests/test_report.py, test_analysis_report.py,
validity_check.py, test_generalisation.py); it fails on the first mismatch.
"""
import sys
from datetime import datetime, timezone

import django

django.setup()
from evaluator.services.report import benchmark_markdown  # noqa: E402
from leaderboard.models import Benchmark  # noqa: E402
from tests import test_analysis_report as tar  # noqa: E402
from tests.test_report import Truth, check_report  # noqa: E402

bench = Benchmark.objects.get(name=sys.argv[1])
start = datetime.now(timezone.utc)
text = benchmark_markdown(benchmark=bench)
end = datetime.now(timezone.utc)
lines = text.splitlines()
a = lines.index("## Can a GAN discriminator detect adversarial images?")
b = lines.index("## Generalisation across datasets and architectures")
tar.check("\n".join(lines[a:b]), tar.measure(bench))
print("analysis sections: every number matches the stored arrays")
check_report("\n".join(lines[:a] + lines[b:]), Truth.measure(bench, start, end))
print("rest of the report (suite, matrix, validity, charter, generalisation): every number matches")
