"""What the docs ship for operators, for tests: the Grafana dashboard's PromQL (runnable outside Grafana) and the
README's ClickHouse queries."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "compose" / "observability"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "authwire.json"
_METRIC = re.compile(r"\b((?:authwire|process)_[a-z0-9_]+)\b")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def expressions() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def runnable(expr: str) -> str:
    """Grafana's variables replaced as Grafana would with "All" selected and a 1 m rate window."""
    return expr.replace("$__rate_interval", "1m").replace('=~"$job"', '=~".+"').replace('=~"$instance"', '=~".+"')


def metric_names(exprs: list[str]) -> set[str]:
    return {name for e in exprs for name in _METRIC.findall(e)}


def exposed_names(text: str) -> set[str]:
    """Sample names a /metrics text can produce: TYPE lines, plus _bucket/_sum/_count of histograms."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names.add(name)
        if kind == "histogram":
            names.update(name + s for s in _HISTOGRAM_SUFFIXES)
    return names


def readme_sql() -> str:
    """The ```sql blocks of the README's Operations section."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("<!-- section: operations"):readme.index("<!-- end section: operations")]
    return "\n".join(re.findall(r"```sql\n(.*?)```", section, re.S))
