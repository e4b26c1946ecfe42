"""The Lua gRPC-Web client (gateway-plugins/lua/authwire/grpc_web_client.lua) in real nginx against reply
shapes the sidecar does not produce but a proxy or another server may: chunked bodies, trailers-only
responses with the status in the headers, non-zero grpc-status, HTTP errors, truncated frames; and its
keep-alive pool (the second call reuses the connection).
"""

from __future__ import annotations

import json
import struct

import nginx_process
import pytest

from authwire.v1 import ingest_pb2

pytestmark = pytest.mark.gateway


def lua_bytes(data: bytes) -> str:
    return '"' + "".join(f"\\{b}" for b in data) + '"'


def frame(payload: bytes, flag: int = 0) -> bytes:
    return struct.pack(">BI", flag, len(payload)) + payload


RESPONSE = ingest_pb2.ReportResponse(accepted=2, rejections=[
    ingest_pb2.Rejection(index=1, field="client.port", reason="0 is outside 1..65535")]).SerializeToString()
OK_BODY = frame(RESPONSE) + frame(b"grpc-status:0\r\ngrpc-message:\r\n", 0x80)
SINKS = {
    # name: (status, extra headers, body, send as chunked)
    "length": (200, "", OK_BODY, False),
    "chunked": (200, "", OK_BODY, True),
    "denied": (200, "", frame(b"grpc-status:3\r\ngrpc-message:bad%20frame%20here\r\n", 0x80), False),
    "headers_only": (200, 'ngx.header["grpc-status"] = "14"; ngx.header["grpc-message"] = "store%20down"', b"", False),
    "http_error": (503, "", b"overloaded", False),
    "truncated": (200, "", OK_BODY[:-3], False),
}


def http_body(tmp) -> str:
    servers = []
    for name, (status, headers, body, chunked) in SINKS.items():
        send = ("ngx.print(string.sub(B, 1, 7)); ngx.flush(true); ngx.print(string.sub(B, 8))" if chunked
                else "ngx.header['Content-Length'] = #B; ngx.print(B)")
        servers.append(f"""
  server {{
    listen unix:{tmp}/{name}.sock;
    location / {{
      content_by_lua_block {{
        ngx.req.read_body()
        local B = {lua_bytes(body)}
        ngx.status = {status}
        ngx.header["Content-Type"] = "application/grpc-web+proto"
        ngx.shared.conns:set("{name}:" .. ngx.var.connection, true)
        {headers}
        {send}
      }}
    }}
  }}""")
    return "  lua_shared_dict conns 1m;\n" + "\n".join(servers) + f"""
  server {{
    listen 127.0.0.1:{{port}};
    location /call {{
      content_by_lua_block {{
        local client = require("authwire.grpc_web_client")
        local cjson = require("cjson")
        local conf = {{ sidecar = "unix:{tmp}/" .. ngx.var.arg_sink .. ".sock", read_timeout = 2000 }}
        local out = {{}}
        for i = 1, 2 do
          local resp, err = client.report(conf, {{ "\\10\\1a", "\\10\\1b" }})
          out[i] = resp and {{ accepted = resp.accepted, rejections = resp.rejections }} or {{ error = err }}
        end
        ngx.say(cjson.encode(out))
      }}
    }}
    location /conns {{
      content_by_lua_block {{
        local n = 0
        for _, k in ipairs(ngx.shared.conns:get_keys(0)) do
          if k:sub(1, #ngx.var.arg_sink + 1) == ngx.var.arg_sink .. ":" then n = n + 1 end
        end
        ngx.say(n)
      }}
    }}
  }}
"""


@pytest.fixture(scope="module")
def server():
    import shutil
    import tempfile
    from pathlib import Path

    from support import require

    reason = nginx_process.missing()
    require(reason is None, reason or "")
    tmp = Path(tempfile.mkdtemp(prefix="aw-gwc-"))
    srv = nginx_process.start_nginx(tmp / "nginx", http_body(tmp))
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def call(server, sink: str) -> list[dict]:
    code, body, _ = nginx_process.http_request(server.port, f"/call?sink={sink}")
    assert code == 200, body
    return json.loads(body)


@pytest.mark.parametrize("sink", ["length", "chunked"])
def test_content_length_and_chunked_replies(server, sink):
    for result in call(server, sink):  # twice: the second call runs on the pooled connection
        assert result == {"accepted": 2, "rejections": [
            {"index": 1, "field": "client.port", "reason": "0 is outside 1..65535"}]}


def test_keepalive_connection_is_reused(server):
    call(server, "length")
    call(server, "length")
    # four reports in a row, one after the other: the pool hands the same connection back each time
    code, body, _ = nginx_process.http_request(server.port, "/conns?sink=length")
    assert (code, int(body)) == (200, 1)


@pytest.mark.parametrize("sink, words", [
    ("denied", "grpc-status 3: bad frame here"),
    ("headers_only", "grpc-status 14: store down"),
    ("http_error", "HTTP 503"),
    ("truncated", "truncated gRPC-Web frame"),
])
def test_failures_are_reported_not_raised(server, sink, words):
    for result in call(server, sink):
        assert words in result["error"], result
