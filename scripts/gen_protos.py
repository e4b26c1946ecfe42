"""Regenerate the committed Python stubs from protos/ (``make protos``).

Stubs live in sidecar/authwire/v1/ so `import authwire.v1.auth_event_pb2` works from the installed package.
tests/test_contract.py regenerates into a temporary directory and fails when the committed ones differ.
"""

from __future__ import annotations

import sys
from importlib.resources import files
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out_dir: Path) -> list[Path]:
    """Compile every .proto under protos/ into out_dir; return the generated files."""
    sources = sorted(PROTOS.rglob("*.proto"))
    include = str(files("grpc_tools") / "_proto")
    args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={out_dir}", f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}", *[str(s) for s in sources]]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_dir / "authwire" / "v1").glob("*.py*"))


if __name__ == "__main__":
    out = ROOT / "sidecar"
    for path in generate(out):
        print(path.relative_to(ROOT))
    sys.exit(0)
