"""The synthetic benchmarks now live in devkit/fakes.py (the page benches use them too);
this module keeps the tests' imports working."""

from devkit.fakes import (  # noqa: F401
    CLASSES,
    EVAL,
    FakeSuite,
    World,
    _evaluation,
    _predictions,
    fake_benchmark,
    fake_dataset,
    fake_network,
    fake_suite,
    fake_world,
    stub_targz,
    stub_zip,
)
