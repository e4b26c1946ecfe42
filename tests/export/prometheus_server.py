"""A real Prometheus (Debian's /usr/bin/prometheus) scraping targets every second, for tests and the bench.

It gets its own config, storage directory and loopback port: a Prometheus that apt may have started as a
service (on :9090) is neither used nor touched.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from support import free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def prometheus_missing() -> str | None:
    if not Path(PROMETHEUS).exists():
        return "needs Debian's prometheus (scripts/setup-system.sh: apt-get install prometheus)"
    return None


@dataclass
class Prometheus:
    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: str) -> dict:
        """GET /api/v1/<path>; the `data` member of a success answer."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict]:
        """Instant query: the result vector ([{metric: {...}, value: [t, "v"]}, ...])."""
        return self.api("query", query=promql)["result"]

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{self.log_text()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def scrape_config(targets: list[str], interval: str = "1s", job: str = "authwire") -> dict:
    """A prometheus.yml scraping `targets` (HOST:PORT) at /metrics every `interval`."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "scrape_configs": [{"job_name": job, "metrics_path": "/metrics",
                            "static_configs": [{"targets": targets}]}],
    }


def start_prometheus(workdir: Path, targets: list[str], interval: str = "1s", ready_timeout: float = 30) -> Prometheus:
    """Start Prometheus on a free loopback port with storage under workdir; returns once /-/ready says so."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(targets, interval)))
    port = free_port()
    log = workdir / "prometheus.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            stdout=log_file, stderr=subprocess.STDOUT)
    prometheus = Prometheus(process, port, log)
    deadline = time.monotonic() + ready_timeout
    while not prometheus.ready():
        if time.monotonic() > deadline:
            prometheus.stop()
            raise AssertionError(f"prometheus not ready within {ready_timeout}s:\n{prometheus.log_text()}")
        time.sleep(0.1)
    return prometheus
