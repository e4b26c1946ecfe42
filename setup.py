"""The package's two C extensions; everything else about the package is in pyproject.toml.

Declared here because setuptools still calls `[tool.setuptools.ext-modules]` in pyproject.toml experimental.
Each C file says why it is native code; building them needs gcc and the Python headers (python3-dev:
scripts/setup-system.sh and compose/Dockerfile install them).
"""

from setuptools import Extension, setup

setup(ext_modules=[
    # the native pass from an AuthEvent's wire bytes to its validated row (authwire.ingest.event_rows)
    Extension("authwire.ingest._eventwire", ["sidecar/authwire/ingest/_eventwire.c"], extra_compile_args=["-O2"]),
    # the store thread's per-row work: stored tuples and JSONL objects (authwire.store.columns)
    Extension("authwire.store._rows", ["sidecar/authwire/store/_rows.c"], extra_compile_args=["-O2"]),
])
