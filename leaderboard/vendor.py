"""A static-files finder that serves Plotly's JavaScript from the installed package.

The bundle ships inside the `plotly` Python package (plotly/package_data/plotly.min.js),
so pages load it from our own static URL ``vendor/plotly.min.js`` (no CDN, nothing
copied into the repository, and the version always matches the Python package).
Works with runserver, whitenoise (WHITENOISE_USE_FINDERS) and collectstatic.
"""

from __future__ import annotations

from pathlib import Path

from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

PREFIX = "vendor"
FILES = ("plotly.min.js",)


def _package_data() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return Path("/nonexistent")
    return Path(list(spec.submodule_search_locations)[0]) / "package_data"


class PlotlyFinder(BaseFinder):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.location = _package_data()
        self.storage = FileSystemStorage(location=str(self.location))
        self.storage.prefix = PREFIX

    def check(self, **kwargs):
        return []

    def _present(self) -> list[str]:
        return [name for name in FILES if (self.location / name).is_file()]

    def find(self, path: str, find_all: bool = False, **kwargs):
        find_all = find_all or kwargs.get("all", False)
        for name in self._present():
            if path == f"{PREFIX}/{name}":
                match = str(self.location / name)
                return [match] if find_all else match
        return [] if find_all else None

    def list(self, ignore_patterns):
        for name in self._present():
            yield name, self.storage
