"""compose/observability: the dashboard's metrics exist in a real scrape, the overlay's settings are valid
authwire settings that agree with the Prometheus, Collector and ClickHouse configs, and the README's
ClickHouse queries use attributes the exporter really sends."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
import yaml
from dashboard import OBSERVABILITY, ROOT, dashboard, exposed_names, expressions, metric_names, readme_sql

from authwire import cli
from authwire import config as config_mod
from authwire.demo.lab import Topology, call_in_netns
from authwire.export.otlp_logs import alert_log_record, log_record, resource_attributes
from authwire.v1 import connection_pb2, ingest_pb2, record_pb2
from support import auth_event, free_port, require_root_bcc, start_sidecar, wait_until

GATEWAYS = ("envoy", "apisix", "kong")


def overlay() -> dict:
    return yaml.safe_load((OBSERVABILITY / "docker-compose.yml").read_text())


def gateway_compose(name: str) -> dict:
    return yaml.safe_load((ROOT / "compose" / name / "docker-compose.yml").read_text())


def served_config(gateway: str) -> config_mod.Config:
    """The sidecar's settings with the overlay: the gateway file's command + the overlay's environment."""
    command = gateway_compose(gateway)["services"]["authwire"]["command"]
    args = cli.build_parser().parse_args(command)
    return config_mod.load(args, environ=dict(overlay()["services"]["authwire"]["environment"]))


@pytest.mark.kernel
def test_dashboard_metric_names_exist_in_a_real_scrape(tmp_path):
    """With the kernel inspector and OTLP export on (as in compose), every metric the dashboard queries is
    on /metrics, so no panel can show "no data" for a misspelt name."""
    require_root_bcc()
    with Topology(clients=1) as topo:
        port = free_port()
        sidecar = start_sidecar(tmp_path, "--iface", topo.server_ifaces[0], "--http-listen", f"127.0.0.1:{port}",
                                "--otlp-endpoint", f"127.0.0.1:{free_port()}", inspector=True, netns=topo.server_ns)
        try:
            sidecar.ingest().Report(ingest_pb2.ReportRequest(events=[auth_event("dash-1")]), timeout=30)

            def scrape() -> str:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    return response.read().decode()

            text = wait_until(lambda: (t := call_in_netns(topo.server_ns, scrape)) and
                              "authwire_kernel_packets_total" in t and t, 20, "a scrape with kernel counters")
        finally:
            sidecar.stop()
    missing = metric_names(expressions()) - exposed_names(text)
    assert not missing, f"the dashboard queries metrics /metrics does not have: {sorted(missing)}"


def test_dashboard_is_provisioned_against_the_provisioned_datasource():
    board = dashboard()
    datasources = yaml.safe_load((OBSERVABILITY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    assert {p["datasource"]["uid"] for p in board["panels"]} <= uids
    assert {t["datasource"]["uid"] for p in board["panels"] for t in p["targets"]} <= uids
    grafana = overlay()["services"]["grafana"]
    mounts = dict(v.split(":")[:2][::-1] for v in grafana["volumes"])
    provider = yaml.safe_load((OBSERVABILITY / "grafana/provisioning/dashboards/authwire.yml").read_text())
    assert provider["providers"][0]["options"]["path"] in mounts
    # every panel the issue asks for
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for wanted in ("by auth outcome", "failures/s by reason", "joins/s by status", "drops", "kernel losses"):
        assert wanted in titles
    datasource_url = datasources["datasources"][0]["url"]
    assert datasource_url == "http://prometheus:9090" and "prometheus" in overlay()["services"]


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_overlay_settings_are_valid_and_agree_with_prometheus_and_the_collector(gateway):
    services = overlay()["services"]
    config = served_config(gateway)
    # authwire exports to the collector service's OTLP/gRPC receiver, plaintext on the compose network
    collector = yaml.safe_load((OBSERVABILITY / "otel-collector.yaml").read_text())
    receiver = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    host, port = config.otlp_endpoint.rsplit(":", 1)
    assert host in services and receiver.endswith(f":{port}") and config.otlp_insecure
    assert host in services["authwire"]["depends_on"]
    # Prometheus finds this gateway's namespace by DNS at the port authwire's HTTP listener uses
    prom = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    job = prom["scrape_configs"][0]
    sd = job["dns_sd_configs"][0]
    assert gateway in sd["names"] and gateway in gateway_compose(gateway)["services"]
    assert config.http_listen == [f"0.0.0.0:{sd['port']}"] and job["metrics_path"] == "/metrics"
    # ... with the token authwire uses (non-loopback listener): the same compose secret in both containers
    token = config_mod.token_path(config)
    assert token.parent == Path("/run/secrets") and job["authorization"]["credentials_file"] == str(token)
    secret = token.name
    assert secret in services["prometheus"]["secrets"] and secret in services["authwire"]["secrets"]
    assert secret in overlay()["secrets"]
    if secret in gateway_compose(gateway).get("secrets", {}):  # kong: the same definition, merged
        assert gateway_compose(gateway)["secrets"][secret] == overlay()["secrets"][secret]
    volumes = [v.split(":")[0] for v in services["prometheus"]["volumes"] + services["grafana"]["volumes"]]
    for source in volumes:
        if source.startswith("."):
            assert (ROOT / "compose" / gateway / source).resolve().exists(), source


def test_collector_writes_logs_to_the_clickhouse_service():
    services = overlay()["services"]
    collector = yaml.safe_load((OBSERVABILITY / "otel-collector.yaml").read_text())
    logs = collector["service"]["pipelines"]["logs"]
    assert logs["receivers"] == ["otlp"] and "clickhouse" in logs["exporters"]
    assert set(logs["processors"]) <= set(collector["processors"])
    ch = collector["exporters"]["clickhouse"]
    assert re.match(r"tcp://clickhouse:9000\b", ch["endpoint"]) and "clickhouse" in services
    env = services["clickhouse"]["environment"]
    assert ch["database"] == env["CLICKHOUSE_DB"] and ch["username"] == env["CLICKHOUSE_USER"]
    assert ch["password"] == "${env:CLICKHOUSE_PASSWORD}"
    assert services["otel-collector"]["environment"]["CLICKHOUSE_PASSWORD"] == env["CLICKHOUSE_PASSWORD"]
    assert "contrib" in services["otel-collector"]["image"], "the clickhouse exporter is in the contrib build"


def test_readme_clickhouse_queries_use_attributes_the_exporter_sends():
    sql = readme_sql()
    collector = yaml.safe_load((OBSERVABILITY / "otel-collector.yaml").read_text())
    ch = collector["exporters"]["clickhouse"]
    table = f"{ch['database']}.{ch['logs_table_name']}"
    assert set(re.findall(r"FROM (\S+)", sql)) == {table}
    # A record with every block filled (connection, SYN, JWT, failure), as the exporter maps it.
    event = auth_event("r-1", consumer="alice", credential_id="key-1", outcome=3, reason=3)
    connection = connection_pb2.Connection(uid="C1", community_id="1:x", syn=connection_pb2.SynFingerprint(
        signature="4:64:x", os_hint="linux"))
    record = record_pb2.EnrichedRecord(event=event, join=record_pb2.Join(status=1), connection=connection)
    sent = {kv.key for kv in log_record(record).attributes}
    alert = record_pb2.Alert(id="a-1", detection="stack_stuffing", summary="s")
    alert_keys = {kv.key for kv in alert_log_record(alert, True).attributes}
    used = set(re.findall(r"LogAttributes\['([^']+)'\]", sql))
    assert used and used <= sent | alert_keys, used - sent - alert_keys
    resource = {k for k, _ in resource_attributes(1, "gw-1", "3.18")}
    assert set(re.findall(r"ResourceAttributes\['([^']+)'\]", sql)) <= resource
