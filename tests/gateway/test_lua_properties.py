"""Properties of the shared Lua reporter's boundaries (gateway-plugins/lua/authwire), checked with hypothesis
in a standalone LuaJIT: whole-millisecond times, the untold-drops pool under any interleaving of batches in
flight, failure messages that carry credentials, and JWT expiry from the token's own claims."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from support import require

ROOT = Path(__file__).resolve().parents[2]
LUA_PATH = f"{ROOT}/gateway-plugins/lua/?.lua;;"
CASES = Path(__file__).resolve().parent / "lua" / "property_cases.lua"
KINDS = ("queue_full", "send_failed", "encode_failed")


def run(cases: dict) -> dict:
    luajit = shutil.which("luajit")
    require(luajit is not None, "needs luajit (apt-get install luajit2)")
    result = subprocess.run([luajit, "-e", f"package.path = {LUA_PATH!r} .. package.path", str(CASES)],
                            input=json.dumps({"times": [], "drops": [], "messages": [], "time_reasons": [],
                                              "bodies": [], "packed": [], **cases}),
                            capture_output=True, text=True, errors="replace", timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


MS = st.integers(min_value=1_600_000_000_000, max_value=4_000_000_000_000)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(MS, st.integers(min_value=0, max_value=10_000_000)), min_size=1, max_size=50))
def test_times_are_whole_milliseconds(cases):
    got = run({"times": [[start, start + latency] for start, latency in cases]})["times"]
    for (start, latency), (s, ns, ls, lns) in zip(cases, got, strict=True):
        assert s * 1000 + ns // 1_000_000 == start and ns % 1_000_000 == 0
        assert ls * 1000 + lns // 1_000_000 == latency and lns % 1_000_000 == 0


OPS = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(KINDS), st.integers(min_value=1, max_value=1000)),
    st.tuples(st.just("claim")),
    st.tuples(st.sampled_from(["fail", "accept"]), st.integers(min_value=0, max_value=100)),
)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.lists(OPS, max_size=60), min_size=1, max_size=10))
def test_each_drop_is_told_once_whatever_the_batches_in_flight_do(sequences):
    got = run({"drops": sequences})["drops"]
    for ops, result in zip(sequences, got, strict=True):
        added = {k: sum(op[2] for op in ops if op[0] == "add" and op[1] == k) for k in KINDS}
        assert result["min"] >= 0  # the pool never goes negative
        assert {k: result["told"][k] + result["untold"][k] for k in KINDS} == added  # none lost, none twice


SECRETISH = st.one_of(
    st.builds(lambda a, b: f"eyJ{a}.{b}", st.text("abcXYZ019-_", min_size=4, max_size=30),
              st.text("abcXYZ019-_", min_size=4, max_size=30)),
    st.builds(lambda t: f"Bearer {t}", st.text("abcXYZ019-._~+/", min_size=8, max_size=40)),
    st.builds(lambda t: f"password={t}", st.text("abc123", min_size=1, max_size=10)),
)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=40), SECRETISH, st.text(max_size=40)), min_size=1, max_size=20))
def test_messages_carrying_credentials_are_not_sent(cases):
    got = run({"messages": ["".join(c) for c in cases]})["messages"]
    assert all(m is None or len(m.encode()) <= 256 and not m.startswith(("eyJ", "Bearer ")) for m in got)
    for (before, secret, _after), message in zip(cases, got, strict=True):
        if len((before + secret).encode()) <= 256:  # the secret is within the bounded prefix
            assert message is None, (before, secret)


def test_gateway_messages_are_kept():
    known = ["Missing API key in request", "Invalid user authorization", "failed to verify jwt",
             "client request can't be validated: missing Authorization header", "HMAC signature does not match",
             "exp: token expired", "Bad token; invalid JSON", "No credentials found for given 'iss'"]
    assert run({"messages": known})["messages"] == known


OPTIONAL_T = st.one_of(st.none(), st.integers(min_value=0, max_value=4_000_000_000))


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(OPTIONAL_T, OPTIONAL_T, st.integers(min_value=0, max_value=4_000_000_000),
                          st.integers(min_value=0, max_value=600)), min_size=1, max_size=50))
def test_jwt_time_reason_follows_apisix_checks(cases):
    """APISIX 3.18 jwt-auth/parser.lua claims_checker: exp valid while exp > now - leeway, nbf valid while
    nbf < now + leeway."""
    got = run({"time_reasons": [list(c) for c in cases]})["time_reasons"]
    for (exp, nbf, now, skew), reason in zip(cases, got, strict=True):
        want = "expired" if exp is not None and exp <= now - skew else \
            "clock_skew" if nbf is not None and nbf >= now + skew else None
        assert reason == want


BODIES = st.one_of(
    st.text(max_size=2000),
    st.builds(lambda m: json.dumps({"message": m}), st.text(max_size=600)),
    st.builds(lambda m, k: json.dumps({k: m}), st.text(max_size=100), st.text(max_size=20)),
    st.builds(lambda m: '{"message": "' + m, st.text(max_size=300)),  # cut inside the string
)


@settings(max_examples=25, deadline=None)
@given(st.lists(BODIES, min_size=1, max_size=20))
def test_any_error_body_gives_a_bounded_message_or_none(bodies):
    """The 4xx body is attacker-influenced (an upstream's, or echoed input): parsing never raises, the
    message is at most 256 bytes, and a JSON body's own message is the one taken."""
    got = run({"bodies": bodies})["bodies"]
    for body, message in zip(bodies, got, strict=True):
        assert not isinstance(message, dict), message  # no error raised
        assert message is None or len(message.encode("utf-8", "surrogatepass")) <= 256 + 3
        try:
            parsed = json.loads(body)
        except ValueError:
            continue
        if isinstance(parsed, dict) and isinstance(parsed.get("message"), str) and parsed["message"].isascii() \
                and 0 < len(parsed["message"]) <= 256 and len(body.encode()) <= 1024 \
                and not any(w in parsed["message"].lower() for w in ("=", "eyj", "bearer", "basic", "signature",
                                                                      "password", "secret", "token", "api")):
            assert message == parsed["message"], body


# what nginx puts in the packed variable's fields, and what a client or a broken map could put there instead
ADDR = st.sampled_from(["127.0.0.1", "10.0.0.7", "::1", "[::1]", "[2001:db8::5]", "unix:", "unix:/run/x.sock",
                        "", "[", "[]", "u", "unix"])
NUMBER = st.integers(min_value=0, max_value=70000).map(str) | st.just("")
BAD_NUMBER = st.sampled_from(["4294967296", "12a", "-1", "9" * 20])
TEXT = st.binary(max_size=40).map(lambda b: b.replace(b"|", b"/")) | st.sampled_from(
    [b"GET", b"\xc3\xa9t\xc3\xa9", b"\xff\xfe", b"x" * 3000])
URI = st.binary(max_size=60) | st.sampled_from([b"/a|b|c", b"/" + b"p" * 2100, b"/caf\xc3\xa9", b"/\xc3"])


@st.composite
def packed_captures(draw):
    fields = [draw(ADDR), draw(NUMBER), draw(ADDR), draw(NUMBER), draw(ADDR), draw(NUMBER), draw(NUMBER),
              draw(NUMBER), draw(TEXT), draw(TEXT), draw(NUMBER), draw(NUMBER), draw(NUMBER)]
    if draw(st.integers(0, 7)) == 0:  # now and then a value the encoder refuses, in any numeric field
        fields[draw(st.sampled_from([1, 3, 5, 6, 7, 10, 11, 12]))] = draw(BAD_NUMBER)
    raw = [f.encode() if isinstance(f, str) else f for f in fields]
    packed = b"|".join(raw) + b"|" + draw(URI)
    if draw(st.integers(0, 9)) == 0:
        packed = packed.split(b"|", 1)[1]  # a field short: a map that is not authwire's
    start = draw(MS)
    auth = draw(st.sampled_from([None, {"method": "key_auth", "outcome": "success", "consumer": "alice"}] * 4
                                + [{"method": "nope"}]))
    return {"packed": packed.hex(), "host": draw(TEXT).hex(), "ua": draw(st.none() | TEXT.map(bytes.hex)),
            "start": start, "now": start + draw(st.integers(-5, 100_000)),
            "gateway": draw(st.sampled_from(["other", "kong", "apisix"] * 5 + ["nope"])),
            "node": draw(st.none() | st.sampled_from(["n1", "nœud"])), "auth": auth,
            "route_id": draw(st.none() | st.sampled_from(["r1", "", 7])),
            "service_id": draw(st.none() | st.just("s1")),
            "request_id": draw(st.none() | st.sampled_from(["kong-id-1", "x" * 100])),
            "status": draw(st.sampled_from([None] * 6 + [401, 0, 4294967296]))}


@settings(max_examples=40, deadline=None)
@given(st.lists(packed_captures(), min_size=1, max_size=30))
def test_packed_events_written_directly_equal_the_table_encoders(cases):
    """event.write_packed (no event table, no substrings) writes the bytes from_packed + the table encoder
    write, for any field contents; both refuse the same events with the same error."""
    # (about 3 in 4 of the generated captures encode; the rest carry a value the encoder refuses)
    for case, (direct, table) in zip(cases, run({"packed": cases})["packed"], strict=True):
        assert direct == table, case
