"""Static files: the vendored Plotly bundle, fingerprinted and compressed names, caching.

The pages name fingerprinted files (css/site.<hash>.css), which exist only after
collectstatic: tests/conftest.py collects them once per session, as `manage.py run` does.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.templatetags.static import static

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "static" / "vendor" / "plotly-cartesian.min.js"


def _version(head: str) -> str:
    return re.search(r"plotly\.js(?: \([^)]*\))? v(\d+\.\d+\.\d+)", head).group(1)


def test_vendored_plotly_is_the_python_packages_version_and_draws_heatmaps() -> None:
    import plotly

    full = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    assert _version(BUNDLE.read_text()[:300]) == _version(full.read_text()[:300])
    text = BUNDLE.read_text()
    assert "heatmap" in text and "cartesian" in text[:300]
    assert BUNDLE.stat().st_size < full.stat().st_size / 2


@pytest.mark.parametrize("name", ["css/site.css", "js/site.js", "vendor/plotly-cartesian.min.js"])
def test_pages_name_fingerprinted_compressed_copies(name: str) -> None:
    url = static(name)
    stem, ext = name.rsplit(".", 1)
    assert re.fullmatch(rf"/static/{re.escape(stem)}\.[0-9a-f]{{12}}\.{ext}", url), url
    collected = Path(settings.STATIC_ROOT) / url.removeprefix("/static/")
    assert collected.read_bytes() == (ROOT / "static" / name).read_bytes()
    assert gzip.decompress((collected.parent / (collected.name + ".gz")).read_bytes()) == collected.read_bytes()


@pytest.mark.django_db
def test_unfingerprinted_names_are_not_cached_for_long(client) -> None:
    """Only a name that changes with its content may be cached for good."""
    response = client.get("/static/css/site.css")
    assert response.status_code == 200
    assert "immutable" not in response["Cache-Control"]
    hashed = client.get(static("css/site.css"))
    assert "immutable" in hashed["Cache-Control"]
