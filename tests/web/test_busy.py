"""The API bounds the store reads in progress: beyond its threads + queue it answers 429 (counted), and the
rest of the sidecar's threads are never used for them."""

from __future__ import annotations

import asyncio
import threading

import aiohttp
import web_seed as seed

from authwire.access import BearerToken
from authwire.counters import Counters
from authwire.http_listener import HttpListener
from authwire.query import http_api
from authwire.store.record_store import Store


def test_beyond_threads_and_queue_the_api_says_429(tmp_path, monkeypatch):
    seed.build(tmp_path / "a.db")
    monkeypatch.setattr(http_api, "QUERY_QUEUE", 3)
    counters = Counters()
    token = BearerToken("t" * 32)
    release = threading.Event()

    async def run() -> list[int]:
        http = HttpListener(["127.0.0.1:0"], token)
        api = http_api.register(http, Store(tmp_path / "a.db", read_only=True), counters)
        await http.start()
        try:
            for _ in range(http_api.QUERY_THREADS):  # the API's own threads are busy...
                api._executor.submit(release.wait, 30)
            host, port = http.bound[0][:2]
            headers = {"Authorization": f"Bearer {token.value}"}
            async with aiohttp.ClientSession(headers=headers) as client:
                async def get() -> int:
                    async with client.get(f"http://{host}:{port}/v1/records?limit=1") as r:
                        return r.status
                waiting = [asyncio.create_task(get()) for _ in range(http_api.QUERY_THREADS + 3)]
                while api._in_progress < http_api.QUERY_THREADS + 3:
                    await asyncio.sleep(0.01)
                extra = await get()  # ...and the queue is full
                # The rest of the process's threads still answer (asyncio.to_thread is not the API's pool).
                assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), 5) == 42
                release.set()
                return [extra, *await asyncio.gather(*waiting)]
        finally:
            release.set()
            await http.stop()

    statuses = asyncio.run(asyncio.wait_for(run(), 60))
    assert statuses[0] == 429 and set(statuses[1:]) == {200}
    assert counters.get("http.busy", "records") == 1
