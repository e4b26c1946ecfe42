"""gateway-plugins/envoy/envoy.yaml is a config Envoy accepts, and it agrees with what authwire reads.

The demo/test config (authwire.demo.envoy_runner.render_config) and the shipped example must stay the same
shape: same filters in the same order, same ALS settings, same metadata keys and consumer header.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from authwire.config import Config
from authwire.demo.credentials import DemoCredentials, write_gateway_files
from authwire.demo.envoy_runner import EnvoyUnavailable, GatewaySpec, envoy_binary, render_config
from support import require

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "gateway-plugins" / "envoy" / "envoy.yaml"

pytestmark = pytest.mark.gateway


def _envoy() -> Path:
    try:
        return envoy_binary()
    except EnvoyUnavailable as exc:
        require(False, str(exc))
        raise


def _validate(binary: Path, config: Path) -> None:
    result = subprocess.run([str(binary), "--mode", "validate", "-c", str(config)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, f"envoy rejected {config}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"


def _hcm(bootstrap: dict) -> dict:
    return bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def _filter(hcm: dict, name: str) -> dict:
    return next(f["typed_config"] for f in hcm["http_filters"] if f["name"] == name)


def test_example_config_is_accepted_by_envoy(tmp_path):
    binary = _envoy()
    write_gateway_files(str(tmp_path / "keys"))
    text = EXAMPLE.read_text().replace("/etc/envoy/", f"{tmp_path}/keys/")
    config = tmp_path / "envoy.yaml"
    config.write_text(text)
    _validate(binary, config)


def test_rendered_demo_config_is_accepted_by_envoy(tmp_path):
    binary = _envoy()
    spec = GatewaySpec(listen="127.0.0.1:18080", als_target=f"unix:{tmp_path}/als.sock",
                       admin_socket=str(tmp_path / "admin.sock"), upstream="127.0.0.1:18081")
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(render_config(spec, DemoCredentials())))
    _validate(binary, config)


def test_example_and_rendered_config_agree():
    example = _hcm(yaml.safe_load(EXAMPLE.read_text()))
    spec = GatewaySpec(listen="127.0.0.1:1", als_target="127.0.0.1:9180", admin_socket="/tmp/x")
    rendered = _hcm(render_config(spec, DemoCredentials()))

    assert [f["name"] for f in example["http_filters"]] == [f["name"] for f in rendered["http_filters"]]
    assert example["generate_request_id"] is rendered["generate_request_id"] is True
    ex_als, re_als = example["access_log"][0], rendered["access_log"][0]
    assert ex_als["name"] == re_als["name"] == "envoy.access_loggers.http_grpc"
    consumer = Config().consumer_header
    for als in (ex_als, re_als):
        assert als["typed_config"]["additional_request_headers_to_log"] == [consumer]
        assert "authorization" not in [h.lower() for h in als["typed_config"]["additional_request_headers_to_log"]]
        assert als["typed_config"]["common_config"]["transport_api_version"] == "V3"
    # the batching bench/overhead.py measured (README "Envoy")
    for key in ("buffer_flush_interval", "buffer_size_bytes"):
        assert str(ex_als["typed_config"]["common_config"][key]) == str(re_als["typed_config"]["common_config"][key])
    assert re_als["typed_config"]["common_config"]["buffer_size_bytes"] == 65536

    def provider(hcm: dict) -> dict:
        return next(iter(_filter(hcm, "envoy.filters.http.jwt_authn")["providers"].values()))

    for key in ("payload_in_metadata", "header_in_metadata", "failed_status_in_metadata", "forward"):
        assert provider(example)[key] == provider(rendered)[key], key
    assert provider(example)["claim_to_headers"] == provider(rendered)["claim_to_headers"] == [
        {"header_name": consumer, "claim_name": "sub"}]
    for hcm in (example, rendered):
        assert _filter(hcm, "envoy.filters.http.basic_auth")["forward_username_header"] == consumer
        mutation = _filter(hcm, "envoy.filters.http.header_mutation")["mutations"]["request_mutations"]
        assert mutation == [{"remove": consumer}]
    assert [r["name"] for r in example["route_config"]["virtual_hosts"][0]["routes"]] == \
        [r["name"] for r in rendered["route_config"]["virtual_hosts"][0]["routes"]]
