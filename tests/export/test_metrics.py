"""Prometheus /metrics: names and labels, histograms, health checks, and a real Prometheus scraping a sidecar."""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request

import dashboard
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from prometheus_server import prometheus_missing, start_prometheus

from authwire.counters import HISTOGRAM_BUCKETS, Counters
from authwire.demo.lab import Topology, call_in_netns
from authwire.export.metrics import COUNTERS, Metrics, StoreHealth
from authwire.v1 import auth_event_pb2 as pb
from authwire.v1 import ingest_pb2
from support import auth_event, free_port, require, start_sidecar, wait_until

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_every_counter_is_exposed_with_prometheus_names():
    counters = Counters()
    for name, spec in COUNTERS.items():
        counters.inc(name, "/".join(f"x{i}" for i in range(len(spec.labels))), 3)
    counters.inc("detect.something_new", "bucket_a", 2)   # a counter nobody mapped yet: still exposed
    counters.inc("kernel.decode_errors")                  # app-side kernel counter without an inspector
    text = Metrics(counters).render().decode()
    got = samples(text)
    for spec in COUNTERS.values():
        labels = tuple(sorted((name, f"x{i}") for i, name in enumerate(spec.labels)))
        assert got[(f"authwire_{spec.metric}_total", labels)] == pytest.approx(3 * spec.scale), spec
    assert got[("authwire_detect_cpu_seconds_total", ())] == pytest.approx(3e-9)  # counted in ns, base unit s
    assert got[("authwire_detect_something_new_total", (("kind", "bucket_a"),))] == 2
    assert got[("authwire_kernel_decode_errors_total", ())] == 1
    for family in text_string_to_metric_families(text):
        assert METRIC_NAME.match(family.name)
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)


def test_histograms_are_cumulative_in_seconds():
    counters = Counters()
    for seconds in (0.0004, 0.002, 0.002, 0.04, 7.0):
        counters.observe("ingest.ack_seconds", seconds)
    counters.observe("join.wait_seconds", 0.3)  # on a bucket's bound: counted in that bucket (le)
    got = samples(Metrics(counters).render().decode())
    ack = HISTOGRAM_BUCKETS["ingest.ack_seconds"]
    assert got[("authwire_ingest_ack_seconds_bucket", (("le", "0.0005"),))] == 1
    assert got[("authwire_ingest_ack_seconds_bucket", (("le", "0.0025"),))] == 3
    assert got[("authwire_ingest_ack_seconds_bucket", (("le", "0.05"),))] == 4
    assert got[("authwire_ingest_ack_seconds_bucket", (("le", repr(ack[-1])),))] == 4
    assert got[("authwire_ingest_ack_seconds_bucket", (("le", "+Inf"),))] == 5
    assert got[("authwire_ingest_ack_seconds_count", ())] == 5
    assert abs(got[("authwire_ingest_ack_seconds_sum", ())] - 7.0444) < 1e-9
    assert got[("authwire_join_wait_seconds_bucket", (("le", "0.2"),))] == 0
    assert got[("authwire_join_wait_seconds_bucket", (("le", "0.3"),))] == 1


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.tuples(st.text(min_size=1, max_size=30), st.text(max_size=30)),
                       st.integers(min_value=0, max_value=2**53), max_size=8))
def test_any_counter_names_render_as_valid_exposition(values):
    """Whatever names and labels other stages count under, /metrics stays parseable with valid names."""
    counters = Counters()
    for (name, label), n in values.items():
        counters.inc(name, label, n)
    for family in text_string_to_metric_families(Metrics(counters).render().decode()):
        assert METRIC_NAME.match(family.name), family.name
        for s in family.samples:
            assert all(LABEL_NAME.match(k) for k in s.labels)


def test_store_health_fails_after_a_failed_commit_until_the_next_good_one(tmp_path):
    counters = Counters()

    class FakeStore:  # only the file path is read
        path = tmp_path / "db"

    FakeStore.path.write_bytes(b"")
    health = StoreHealth(counters, FakeStore())
    assert health.check() == (True, "writable")
    counters.inc("store.write_failed", "OperationalError", 5)
    assert health.check()[0] is False
    health.committed([])
    assert health.check()[0] is True


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_carry_no_record_data_and_healthz_reports_store_and_inspector(tmp_path):
    port = free_port()
    sidecar = start_sidecar(tmp_path, "--http-listen", f"127.0.0.1:{port}")
    try:
        events = [auth_event("ok-1", client=("198.51.100.77", 41000)),
                  auth_event("bad-1", client=("198.51.100.77", 41001), outcome=pb.AUTH_OUTCOME_FAILURE,
                             reason=pb.FAILURE_REASON_EXPIRED, consumer="mallory-the-consumer",
                             credential_id="cred-mallory")]
        assert sidecar.ingest().Report(ingest_pb2.ReportRequest(events=events)).accepted == 2
        status, text = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        for secret in ("198.51.100.77", "mallory", "cred-", "alice", "key-alice", "ok-1"):
            assert secret not in text
        got = samples(text)
        assert got[("authwire_ingest_accepted_records_total", (("source", "grpc"),))] == 2
        assert got[("authwire_joins_total", (("status", "INSPECTOR_OFF"),))] == 2
        assert got[("authwire_store_records", ())] == 2
        assert got[("authwire_alert_store_alerts", ())] == 0
        assert got[("authwire_inspector_up", (("status", "disabled by --no-inspector"),))] == 0
        assert got[("authwire_ingest_ack_seconds_count", ())] == 1
        assert got[("authwire_auth_records_total", (("method", "jwt"), ("outcome", "success"), ("reason", "")))] == 1
        assert got[("authwire_auth_records_total", (("method", "jwt"), ("outcome", "failure"),
                                                    ("reason", "expired")))] == 1
        status, body = _get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and '"store": {"ok": true' in body and "disabled by --no-inspector" in body
    finally:
        sidecar.stop()


def test_real_prometheus_scrapes_the_ingest_counter_at_the_value_sent(tmp_path):
    require(prometheus_missing() is None, prometheus_missing() or "")
    port = free_port()
    sidecar = start_sidecar(tmp_path, "--http-listen", f"127.0.0.1:{port}")
    prometheus = None
    try:
        sent = 0
        for batch in range(3):
            events = [auth_event(f"p-{batch}-{i}") for i in range(17)]
            sent += sidecar.ingest().Report(ingest_pb2.ReportRequest(events=events)).accepted
        assert sent == 51
        prometheus = start_prometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"])
        value = wait_until(lambda: prometheus.value('authwire_ingest_accepted_records_total{source="grpc"}'),
                           30, "Prometheus to have scraped authwire_ingest_accepted_records_total")
        assert value == sent
        # Prometheus saw the target healthy and the counter move with the next report.
        assert prometheus.value('up{job="authwire"}') == 1
        sidecar.ingest().Report(ingest_pb2.ReportRequest(events=[auth_event("p-last")]))
        wait_until(lambda: prometheus.value('authwire_ingest_received_records_total{source="grpc"}') == sent + 1,
                   30, "the next scrape to show one more received record")
        # Every query of the Grafana dashboard (compose/observability) is valid PromQL for this Prometheus,
        # and the ingest panels have data.
        for expr in dashboard.expressions():
            prometheus.query(dashboard.runnable(expr))  # raises unless Prometheus answers "success"
        assert prometheus.value(dashboard.runnable(
            'sum(increase(authwire_auth_records_total{job=~"$job", instance=~"$instance"}[$__rate_interval]))')) > 0
    finally:
        if prometheus is not None:
            prometheus.stop()
        sidecar.stop()


def test_metrics_off_loopback_need_the_token(tmp_path):
    """On a non-loopback listener (the server side of a veth in a network namespace) /metrics and /healthz
    follow the access rule: no token, 401; the sidecar's token, 200."""
    require(os.geteuid() == 0, "needs root (network namespaces)")
    with Topology(clients=1) as topo:
        client = topo.clients[0]
        port = free_port()
        sidecar = start_sidecar(tmp_path, "--http-listen", f"{client.server_ip4}:{port}", netns=topo.server_ns)
        try:
            base = f"http://{client.server_ip4}:{port}"

            def get(path: str, headers: dict) -> int:
                request = urllib.request.Request(base + path, headers=headers)
                try:
                    with urllib.request.urlopen(request, timeout=5) as response:
                        return response.status
                except urllib.error.HTTPError as exc:
                    return exc.code

            token = {"Authorization": f"Bearer {sidecar.token()}"}
            codes = call_in_netns(client.ns, lambda: [get("/metrics", {}), get("/metrics", token),
                                                      get("/healthz", {}), get("/healthz", token)])
            assert codes == [401, 200, 401, 200]
        finally:
            sidecar.stop()


def test_kernel_levels_are_gauges_and_kernel_events_counters():
    """The inspector's counters() mixes levels (open flows, block-list entries) with event counts."""
    class Inspector:
        @staticmethod
        def counters() -> dict[str, int]:
            return {"flows_open": 7, "block_entries": 2, "block_dropped": 5}

    fams = families(Metrics(Counters(), inspector=Inspector(), inspector_status="running").render().decode())
    assert fams["authwire_kernel_tracked_connections"].type == "gauge"
    assert fams["authwire_kernel_block_entries"].type == "gauge"
    assert fams["authwire_kernel_block_entries"].samples[0].value == 2
    assert fams["authwire_kernel_block_dropped"].type == "counter"
