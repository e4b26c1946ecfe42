"""The access rule shared by every listener: token file, bearer check, the HTTP listener's public/private split."""

from __future__ import annotations

import asyncio
import stat
import urllib.error
import urllib.request

import pytest
from aiohttp import web

from authwire.access import AccessError, load_or_create_token, load_token
from authwire.http_listener import HttpListener


def test_token_file_is_created_private_and_reused(tmp_path):
    path = tmp_path / "state" / "token"
    token = load_or_create_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token.value) >= 40
    assert load_or_create_token(path).value == token.value
    assert token.value not in repr(token)


def test_bearer_check_needs_the_exact_token(tmp_path):
    token = load_or_create_token(tmp_path / "token")
    assert token.matches_authorization(f"Bearer {token.value}")
    assert token.matches_authorization(f"bearer {token.value}")
    for bad in (None, "", token.value, f"Basic {token.value}", f"Bearer {token.value}x", "Bearer "):
        assert not token.matches_authorization(bad)


def test_empty_or_missing_token_file_is_refused_naming_it(tmp_path):
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(AccessError, match="empty"):
        load_token(tmp_path / "empty")
    with pytest.raises(AccessError, match="missing-file"):
        load_token(tmp_path / "missing-file")


def test_non_loopback_listener_without_token_refuses_to_start():
    with pytest.raises(ValueError, match="0.0.0.0:0.*needs a token"):
        HttpListener(["0.0.0.0:0"], None)


def _get(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_public_routes_answer_on_loopback_and_private_ones_need_the_token(tmp_path):
    token = load_or_create_token(tmp_path / "token")

    async def scenario() -> list[int]:
        listener = HttpListener(["127.0.0.1:0"], token)

        async def records(request: web.Request) -> web.Response:
            return web.json_response({"records": []})

        listener.add_route("GET", "/v1/records", records)
        await listener.start()
        try:
            host, port = listener.bound[0][:2]
            base = f"http://{host}:{port}"
            calls = [(f"{base}/healthz", None), (f"{base}/v1/records", None),
                     (f"{base}/v1/records", {"Authorization": "Bearer wrong"}),
                     (f"{base}/v1/records", {"Authorization": f"Bearer {token.value}"})]
            return [await asyncio.to_thread(_get, url, h) for url, h in calls]
        finally:
            await listener.stop()

    assert asyncio.run(scenario()) == [200, 401, 401, 200]
