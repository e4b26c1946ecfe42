"""The web view's files ship inside the package (package data), so an installed authwire serves them."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from authwire.query import http_api

ROOT = Path(__file__).resolve().parents[2]


def test_every_web_file_is_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["authwire"]
    web = ROOT / "sidecar" / "authwire" / "query" / "web"
    files = sorted(p.name for p in web.iterdir() if p.is_file())
    assert set(files) == {"index.html", *http_api.WEB_FILES}  # each is served, none is left unserved
    for name in files:
        assert any(fnmatch.fnmatch(f"query/web/{name}", pattern) for pattern in patterns), name
