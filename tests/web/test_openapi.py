"""/openapi.json and the server agree: schemathesis (every check on) against the live API, and the document's
paths and parameters are exactly what the server routes and accepts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from authwire.query import filters, http_api, openapi

MAX_EXAMPLES = 60  # per operation; bounded so the run stays well under a minute


def test_schemathesis_finds_nothing(web_server, tmp_path):
    st = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [str(st), "run", f"{web_server.base}/openapi.json", "--checks", "all",
         "-H", f"Authorization: Bearer {web_server.token}", "--max-examples", str(MAX_EXAMPLES), "--seed", "14",
         "--generation-database", "none", "--no-color", "--workers", "1", "--request-timeout", "20",
         "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)  # its cache directory goes there too
    summary = result.stdout[-6000:]
    assert result.returncode == 0, summary + result.stderr[-2000:]
    assert "No issues found" in summary and "10 selected / 10 total" in summary, summary


def test_document_names_every_route_and_nothing_else(web_server):
    doc = web_server.get("/openapi.json", token=None).json()
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {op.path for op in [*http_api.OPERATIONS, *http_api.PAGES, http_api.STATIC]} | {
        "/openapi.json"}
    assert len(http_api.OPERATIONS) == 7
    # The server routes every documented path (an undocumented one would 404 here instead of 401).
    for op in http_api.OPERATIONS:
        assert web_server.get(op.path.replace("{request_id}", "x"), token=None).status_code == 401, op.path


def test_document_parameters_are_the_ones_the_server_accepts(web_server):
    doc = openapi.document()
    records = {p["name"]: p for p in doc["paths"]["/v1/records"]["get"]["parameters"]}
    assert set(records) == {f.name for f in filters.FILTERS} | {"limit", "page_token", "group_by"}
    for name, p in records.items():  # each one is checked against its schema
        bad = "x" * (p["schema"]["maxLength"] + 1) if "maxLength" in p["schema"] else "%00bad"
        r = web_server.get(f"/v1/records?{name}={bad}")
        assert r.status_code == 400 and r.json()["invalid_params"][0]["name"] == name, name
    # ...and everything else is refused.
    assert web_server.get("/v1/records?client-ip=10.0.0.1").status_code == 400
    for op in http_api.OPERATIONS:
        documented = {p["name"] for p in doc["paths"][op.path]["get"]["parameters"] if p["in"] == "query"}
        path = op.path.replace("{request_id}", "scan-1")
        assert web_server.get(f"{path}?{'&' if '?' in path else ''}undocumented=1").status_code == 400
        assert all(name in documented for name in (s.name for s in op.params))


@pytest.mark.parametrize("message", ["QueryResponse", "EnrichedRecord", "StatsResponse", "ConnectionsResponse",
                                     "AlertsResponse", "Alert"])
def test_response_schemas_follow_the_protos(message):
    schemas = openapi.document()["components"]["schemas"]
    from authwire.v1 import query_pb2, record_pb2

    descriptor = getattr(query_pb2, message, None) or getattr(record_pb2, message)
    assert set(schemas[descriptor.DESCRIPTOR.full_name]["properties"]) == {f.name for f in descriptor.DESCRIPTOR.fields}
