"""The YAML blocks of gateway-plugins/apisix/README.md, as the tests use them: the README is what is tested.

A block is found by its first line (`# conf/config.yaml`, `# conf/apisix.yaml: routes and consumers`,
`# conf/apisix.yaml: a global rule`); only addresses are replaced (the sidecar's, the upstream's, the
README's /opt/authwire mount).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import yaml

README = Path(__file__).resolve().parents[3] / "gateway-plugins" / "apisix" / "README.md"
README_SIDECAR = "127.0.0.1:9181"
README_UPSTREAM = "127.0.0.1:8080"
README_MOUNT = "/opt/authwire"


def block(first_line: str) -> str:
    """The text of the ```yaml block of the README whose first line is `first_line`."""
    text = README.read_text()
    for match in re.finditer(r"```yaml\n(.*?)```", text, re.S):
        body = textwrap.dedent(match.group(1))
        if body.lstrip().startswith(first_line):
            return body
    raise AssertionError(f"README {README} has no yaml block starting with {first_line!r}")


def load(first_line: str, *, sidecar: str, upstream: str = "{upstream}") -> dict:
    text = block(first_line).replace(README_SIDECAR, sidecar).replace(README_UPSTREAM, upstream)
    text = text.replace(README_MOUNT, str(README.parents[1]))
    return yaml.safe_load(text)


def routes_and_consumers(sidecar: str) -> dict:
    return load("# conf/apisix.yaml: routes and consumers", sidecar=sidecar)


def global_rule(sidecar: str) -> dict:
    return load("# conf/apisix.yaml: a global rule", sidecar=sidecar)


def config(sidecar: str = README_SIDECAR) -> dict:
    return load("# conf/config.yaml", sidecar=sidecar)


def packed_map() -> str:
    """The README's `map` line for packed_var (from its nginx_config.http_configuration_snippet block)."""
    text = README.read_text()
    match = re.search(r"^\s*(map \$request_id \$authwire_vars \{.*\})\s*$", text, re.M)
    assert match, f"README {README} has no authwire_vars map"
    return match.group(1)
