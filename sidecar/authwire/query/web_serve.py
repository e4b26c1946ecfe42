"""`authwire web --db PATH`: the JSON API and web view on a store file, without a running sidecar.

Opens the store read-only (the demo's, a copy from production, a store whose sidecar has stopped), serves
it on its own HTTP listener (loopback, any free port by default) under the same access rule as `serve`
(bearer token from the token file beside the store; the browser logs in with the one-time link printed
here), and runs until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import TextIO

from authwire import access
from authwire.counters import Counters
from authwire.http_listener import HttpListener
from authwire.query import http_api
from authwire.store.alerts import AlertStore, alerts_path
from authwire.store.record_store import Store


def default_token_file(db: str | Path) -> Path:
    """The token file `serve --db` uses by default: 'token' beside the store."""
    return Path(db).parent / "token"


async def run(db: str, listen: list[str], token_file: str = "", out: TextIO = sys.stdout) -> None:
    store = Store(db, read_only=True)
    alerts_file = alerts_path(db)
    alerts = AlertStore(alerts_file, read_only=True) if alerts_file.exists() else None
    token = access.load_or_create_token(token_file or default_token_file(db))
    http = HttpListener(listen, token, setting="--http-listen")
    counters = Counters()
    http_api.register(http, store, counters, inspector_status=f"not running: `authwire web` reads {db}",
                      alerts=alerts)
    await http.start()
    try:
        print(f"authwire web: {store.count():,} records, {alerts.count() if alerts else 0:,} alerts in {db} "
              "(read-only)", file=out, flush=True)
        link = http_api.announce(http, lambda text: print(text, file=out, flush=True))
        if link is None:
            print(f"authwire web: listening on {', '.join(listen)} (no TCP address: no login link)", file=out,
                  flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await http.stop()
        store.close()
        if alerts is not None:
            alerts.close()
