"""Each detection's rule on crafted record sequences: fires, not on the near-miss, deduplicates, forgets."""

from __future__ import annotations

from authwire.counters import Counters
from authwire.detect.engine import UPDATE_EVERY_S, DetectionEngine
from authwire.detect.settings import DetectSettings
from authwire.v1 import auth_event_pb2 as ae
from authwire.v1 import record_pb2
from tests.detect.crafted import BARE, CHROME_WINDOWS, LINUX, SAFARI_MAC, WINDOWS, record, replace, request_id, success


def alerts_of(engine: DetectionEngine, records, detection: str | None = None) -> dict[str, record_pb2.Alert]:
    """Run records through the engine; every alert written (latest state by id)."""
    written: dict[str, record_pb2.Alert] = {}
    for r in records:
        engine.process([r])
        for change in engine.take_changes(force=True):
            change.written = True
            written[change.alert.id] = change.alert
    return {i: a for i, a in written.items() if detection is None or a.detection == detection}


def stuffing(t0: float, n: int = 30, ips: int = 15, creds: int = 15, signature: str = BARE, hops: int = 0):
    return [record(t0 + i * 0.1, ip=f"203.0.113.{10 + i % ips}", credential=f"user{i % creds}",
                   signature=signature, hops=hops, os_hint="network_device") for i in range(n)]


# --- stack_stuffing ------------------------------------------------------------------------------------
def test_stack_stuffing_fires_once_naming_stack_ips_and_credentials(engine):
    found = alerts_of(engine(enabled=("stack_stuffing",)), stuffing(1000.0, n=40))
    assert len(found) == 1
    alert = next(iter(found.values()))
    assert alert.detection == "stack_stuffing"
    assert alert.stack == f"{BARE}/hops=0" and alert.key == f"stack={BARE}/hops=0"
    assert len(alert.clients) == 15 and "203.0.113.10" in alert.clients
    assert set(alert.credentials) == {f"user{i}" for i in range(15)}
    assert alert.evidence["failures"] == 40 and alert.evidence["distinct_ips"] == 15
    assert alert.evidence["matched_requests"] == 40 - 20 + 1  # from the 20th failure on
    assert 0 < len(alert.request_ids) <= 32
    assert alert.first_time.ToNanoseconds() == int(1000.0 * 1e9)


def test_stack_stuffing_near_misses(engine):
    # one IP (a user retrying), one credential from many IPs, and a busy stack with a few typos
    one_ip = stuffing(1000.0, n=40, ips=1)
    one_cred = stuffing(2000.0, n=40, creds=1, signature=LINUX)
    # 40 users of a common stack each mistype once and then log in (10 times each): ratio 40/440
    busy = [success(3000.0 + i * 0.01, ip=f"10.1.0.{i % 40}", credential=f"u{i % 40}", hops=3) for i in range(400)]
    busy += [record(3004.0 + i * 0.01, ip=f"10.1.0.{i}", credential=f"u{i}", hops=3) for i in range(40)]
    assert alerts_of(engine(enabled=("stack_stuffing",)), [*one_ip, *one_cred, *busy]) == {}


def test_stack_stuffing_is_not_hidden_by_the_benign_volume_of_its_stack(engine):
    # the attacker shares the most common stack with thousands of successful users
    benign = [success(1000.0 + i * 0.001, ip=f"10.2.{i // 250}.{i % 250}", credential=f"u{i}", signature=LINUX)
              for i in range(3000)]
    attack = stuffing(1003.0, n=40, signature=LINUX)
    assert len(alerts_of(engine(enabled=("stack_stuffing",)), [*benign, *attack])) == 1


def test_stack_stuffing_threshold_is_exact(engine):
    e = engine(enabled=("stack_stuffing",), stack_stuffing_min_failures=20, stack_stuffing_min_ips=10,
               stack_stuffing_min_credentials=10)
    assert alerts_of(e, stuffing(1000.0, n=19, ips=10, creds=10)) == {}
    assert len(alerts_of(e, stuffing(1001.9, n=1, ips=10, creds=10))) == 1


def test_stack_stuffing_dedups_then_opens_a_new_alert_after_a_quiet_window(engine):
    e = engine(enabled=("stack_stuffing",), stack_stuffing_window=60.0)
    first = alerts_of(e, stuffing(1000.0, n=60))
    assert len(first) == 1
    again = alerts_of(e, stuffing(1000.0 + 200, n=30))  # > window later: a new alert
    assert len(again) == 1 and set(again) != set(first)


def test_stack_stuffing_forgets_within_its_bound(engine):
    e = engine(enabled=("stack_stuffing",), max_keys=16)
    for i in range(200):
        e.process([record(1000.0 + i, signature=f"4:64:{1000 + i}:-:-:M:-")])
    detector = e.detectors[0]
    assert len(detector._stacks) == 16 and detector.size() <= detector.bound()
    assert detector.forgotten() == 200 - 16
    e._count_detector_state()
    assert e.counters.get("detect.forgotten", "stack_stuffing") == 184


def test_records_without_a_client_stack_are_not_counted(engine):
    rows = [record(1000.0 + i * 0.1, ip=f"203.0.113.{i}", credential=f"u{i}", exact=False) for i in range(40)]
    assert alerts_of(engine(enabled=("stack_stuffing",)), rows) == {}


# --- credential_replay ---------------------------------------------------------------------------------
def test_credential_replay_concurrent_use_is_critical(engine):
    e = engine(enabled=("credential_replay",))
    home = [success(1000.0 + i, ip="198.51.100.7", credential="key-alice", signature=LINUX) for i in range(5)]
    replay = [success(1006.0, ip="203.0.113.99", credential="key-alice", signature=BARE, os_hint="network_device")]
    owner_again = [success(1007.0, ip="198.51.100.7", credential="key-alice", signature=LINUX)]
    found = alerts_of(e, [*home, *replay, *owner_again])
    assert len(found) == 1
    alert = next(iter(found.values()))
    assert alert.severity == record_pb2.ALERT_SEVERITY_CRITICAL
    assert alert.key == "credential=key-alice" and alert.client.ip == "203.0.113.99"
    assert request_id(replay[0]) in alert.request_ids
    assert alert.stack == f"{BARE}/hops=0"


def test_credential_replay_after_a_move_is_a_warning(engine):
    e = engine(enabled=("credential_replay",), credential_replay_concurrent=60.0)
    rows = [success(1000.0, ip="198.51.100.7", credential="key-bob"),
            success(1000.0 + 600, ip="203.0.113.5", credential="key-bob", signature=WINDOWS, os_hint="windows")]
    found = alerts_of(e, rows)
    assert [a.severity for a in found.values()] == [record_pb2.ALERT_SEVERITY_WARNING]


def test_credential_replay_near_misses(engine):
    e = engine(enabled=("credential_replay",), credential_replay_window=600.0)
    rows = [success(1000.0 + i, ip=f"198.51.100.{i % 5 + 1}", credential="key-alice") for i in range(10)]  # same /24
    rows += [success(1020.0, ip="203.0.113.9", credential="key-carol", signature=BARE)]  # another credential
    rows += [success(1000.0 + 700 + 10, ip="203.0.113.9", credential="key-alice", signature=BARE)]  # after window
    rows += [record(2000.0, ip="192.0.2.99", credential="key-alice", signature=WINDOWS)]  # a failure
    assert alerts_of(e, rows) == {}


def test_credential_replay_keys_jwts_on_the_token(engine):
    e = engine(enabled=("credential_replay",))
    rows = [success(1000.0, consumer="sensor-7", jti_hash="aa" * 32, method=ae.AUTH_METHOD_JWT),
            success(1001.0, consumer="sensor-7", jti_hash="bb" * 32, method=ae.AUTH_METHOD_JWT, signature=BARE,
                    ip="203.0.113.1")]  # same subject, another token: a second device, not a replay
    assert alerts_of(e, rows) == {}
    rows = [success(1002.0, consumer="sensor-7", jti_hash="aa" * 32, method=ae.AUTH_METHOD_JWT, signature=BARE,
                    ip="203.0.113.2")]
    found = alerts_of(e, rows)
    assert [a.key for a in found.values()] == [f"credential=jti:{'aa' * 32}"]


def test_credential_replay_forgets_within_its_bound(engine):
    e = engine(enabled=("credential_replay",), max_keys=16)
    for i in range(100):
        e.process([success(1000.0 + i, credential=f"k{i}")])
    for i in range(10):  # one credential from 10 positions: 4 kept
        e.process([success(2000.0 + i, credential="roamer", ip=f"10.{i}.0.1")])
    detector = e.detectors[0]
    assert detector.size() <= detector.bound() and detector.forgotten() >= 100 - 16 + 6


# --- ua_stack_mismatch ---------------------------------------------------------------------------------
def test_ua_stack_mismatch_fires_per_client_and_outcome(engine):
    e = engine(enabled=("ua_stack_mismatch",))
    rows = [success(1000.0 + i, ip="203.0.113.7", user_agent=CHROME_WINDOWS, signature=LINUX) for i in range(5)]
    rows += [record(1010.0, ip="203.0.113.7", user_agent=CHROME_WINDOWS, signature=LINUX)]  # failure: 2nd key
    rows += [success(1011.0, ip="203.0.113.8", user_agent=SAFARI_MAC, signature=BARE, os_hint="network_device")]
    found = alerts_of(e, rows)
    assert sorted(a.key for a in found.values()) == [
        "client=203.0.113.7/ua=windows/syn=linux/outcome=failure",
        "client=203.0.113.7/ua=windows/syn=linux/outcome=success",
        "client=203.0.113.8/ua=macos/syn=network_device/outcome=success"]
    one = next(a for a in found.values() if a.key.endswith("success") and a.client.ip == "203.0.113.7")
    assert one.evidence["requests"] == 5 and "Mozilla" not in one.summary  # the UA text is never copied


def test_ua_stack_mismatch_near_misses(engine):
    e = engine(enabled=("ua_stack_mismatch",))
    rows = [success(1000.0, user_agent=CHROME_WINDOWS, signature=WINDOWS, os_hint="windows"),
            success(1001.0, user_agent="curl/8.5", signature=BARE, os_hint="network_device"),
            success(1002.0, user_agent=CHROME_WINDOWS, signature="4:64:1460:m*44:7:MNWST:df", os_hint="unknown"),
            success(1003.0, user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0", signature=LINUX),
            success(1004.0, user_agent=CHROME_WINDOWS, exact=False)]
    assert alerts_of(e, rows) == {}


def test_ua_stack_mismatch_is_rate_limited_and_bounded(engine):
    e = engine(enabled=("ua_stack_mismatch",), ua_stack_mismatch_max_new_per_minute=5, max_keys=16)
    rows = [success(1000.0 + i * 0.01, ip=f"10.0.{i // 250}.{i % 250}", user_agent=CHROME_WINDOWS)
            for i in range(40)]
    assert len(alerts_of(e, rows)) == 5
    detector = e.detectors[0]
    assert detector.rate_limited == 35
    for i in range(100):
        e.process([success(2000.0 + i * 60, ip=f"10.1.0.{i}", user_agent=CHROME_WINDOWS + str(i))])
    assert detector.size() <= detector.bound() and len(detector._clients) == 16


# --- keepalive_stuffing ----------------------------------------------------------------------------------
def test_keepalive_stuffing_fires_on_one_connection(engine):
    e = engine(enabled=("keepalive_stuffing",))
    rows = [record(1000.0 + i * 0.05, uid="Cabc", credential=f"user{i}") for i in range(50)]
    found = alerts_of(e, rows)
    assert len(found) == 1
    alert = next(iter(found.values()))
    assert alert.key == "conn=Cabc" and alert.connection_uids == ["Cabc"]
    assert alert.evidence["failures"] == 50 and alert.client.ip == "198.51.100.7"
    assert alert.severity == record_pb2.ALERT_SEVERITY_WARNING


def test_keepalive_stuffing_uses_the_gateway_connection_without_the_kernel(engine):
    e = engine(enabled=("keepalive_stuffing",))
    rows = [record(1000.0 + i * 0.05, exact=False, gateway_conn=77, credential=f"user{i}") for i in range(25)]
    assert [a.key for a in alerts_of(e, rows).values()] == ["conn=gw#77"]


def test_keepalive_stuffing_near_misses(engine):
    e = engine(enabled=("keepalive_stuffing",))
    stale_token = [record(1000.0 + i, uid="Cone", credential="key-old") for i in range(50)]
    too_few = [record(2000.0 + i, uid="Ctwo", credential=f"user{i}") for i in range(19)]
    spread = [record(3000.0 + i, uid=f"C{i}", credential=f"user{i}") for i in range(50)]
    no_conn = [record(4000.0 + i, exact=False, credential=f"user{i}") for i in range(50)]
    assert alerts_of(e, [*stale_token, *too_few, *spread, *no_conn]) == {}


def test_keepalive_stuffing_forgets_within_its_bound(engine):
    e = engine(enabled=("keepalive_stuffing",), max_keys=16)
    for i in range(3000):
        e.process([record(1000.0 + i * 0.001, uid=f"C{i % 40}", credential=f"user{i}")])
    detector = e.detectors[0]
    assert detector.size() <= detector.bound() and len(detector._connections) == 16


# --- the engine ------------------------------------------------------------------------------------------
def test_an_alert_is_updated_not_repeated(engine):
    now = [0.0]
    e = DetectionEngine(DetectSettings(), None, Counters(), monotonic=lambda: now[0])
    rows = [record(1000.0 + i * 0.05, uid="Cabc", credential=f"user{i}") for i in range(200)]
    written = []
    for i, r in enumerate(rows):
        now[0] = i * 0.05  # the sidecar's clock moves with the traffic
        e.process([r])
        for change in e.take_changes():  # not forced: an update at most every UPDATE_EVERY_S
            change.written = True
            written.append(change.alert.id)
    assert len(set(written)) == 1
    # raised at the 20th failure (t=0.95 s), then rewritten once per second of traffic, never per request
    assert len(written) == 1 + int((199 * 0.05 - 0.95) / UPDATE_EVERY_S)
    alert = e.open_alerts()[0]
    assert alert.evidence["failures"] >= 180


def test_open_alerts_are_bounded(engine):
    e = engine(enabled=("keepalive_stuffing",), max_keys=16, keepalive_stuffing_min_failures=2,
               keepalive_stuffing_min_credentials=1)
    for c in range(100):
        e.process([record(1000.0 + c, uid=f"C{c}", credential="x"), record(1000.1 + c, uid=f"C{c}", credential="y")])
    assert len(e.open_alerts()) <= 16
    assert e.counters.get("detect.alerts_forgotten", "keepalive_stuffing") == 100 - 16


def test_gateways_that_name_no_credential_still_get_stuffing_alerts(engine):
    # Envoy's basic_auth and jwt_authn report a rejected request without the username or subject it tried
    e = engine(enabled=("stack_stuffing", "keepalive_stuffing"))
    rows = [replace(r, credential_id="") for r in stuffing(1000.0, n=30, ips=15, creds=1)]
    rows += [record(2000.0 + i * 0.01, uid="Cenvoy", credential="") for i in range(25)]
    found = alerts_of(e, rows)
    assert sorted(a.detection for a in found.values()) == ["keepalive_stuffing", "stack_stuffing"]
    stack = next(a for a in found.values() if a.detection == "stack_stuffing")
    assert stack.evidence["credentials_unnamed"] == 30 and "reports none" in stack.summary
    # ... but where the gateway names them, one credential from many IPs is still no stuffing
    assert alerts_of(engine(enabled=("stack_stuffing",)), stuffing(3000.0, n=30, creds=1)) == {}


def test_jwt_users_are_told_apart_by_subject_not_the_signing_key_id(engine):
    # Envoy reports a JWT's kid as its credential id: the same for every user of one issuer
    e = engine(enabled=("credential_replay",))
    rows = [success(1000.0 + i, ip=f"10.{i}.0.1", signature=[LINUX, WINDOWS, BARE][i % 3], consumer=f"user{i}",
                    credential="issuer-key-1", method=ae.AUTH_METHOD_JWT) for i in range(30)]
    rows = [replace(r, jwt_sub=f"user{i}") for i, r in enumerate(rows)]
    assert alerts_of(e, rows) == {}


def test_stack_stuffing_names_only_the_ips_that_mostly_fail(engine):
    # 30 users of the attacker's stack mistype once among 5 logins each; the attacker's pool only fails
    typos = [success(1000.0 + i * 0.01, ip=f"10.3.0.{i % 30}", credential=f"u{i % 30}") for i in range(150)]
    typos += [record(1002.0 + i * 0.01, ip=f"10.3.0.{i}", credential=f"u{i}") for i in range(30)]
    attack = [record(1003.0 + i * 0.01, ip=f"203.0.113.{i % 12}", credential=f"v{i}") for i in range(24)]
    found = alerts_of(engine(enabled=("stack_stuffing",)), [*typos, *attack])
    [alert] = found.values()
    assert set(alert.clients) == {f"203.0.113.{i}" for i in range(12)}
    assert alert.evidence["failures"] == 24 and alert.evidence["stack_failures"] == 54


def test_a_full_queue_drops_whole_batches_and_counts_them(engine):
    e = engine(queue=1000)
    batch = [record(1000.0 + i, uid="Cq", credential=f"u{i}") for i in range(600)]
    e.submit(batch)
    e.submit(batch)  # 1,200 > 1,000: refused, counted, nothing half-queued
    assert e.counters.get("detect.dropped", "queue_full") == 600
    assert e._queued == 600


def test_queued_batches_are_processed_in_slices_across_batches_without_changing_them(engine):
    import asyncio

    from authwire.detect.engine import CHUNK

    e = engine()
    small = [[record(1000.0 + i, credential=f"s{i}")] for i in range(5)]
    big = [record(2000.0 + i, credential=f"b{i}") for i in range(CHUNK + 10)]
    copies = [list(b) for b in (*small, big)]
    passes: list[int] = []
    process = e.process
    e.process = lambda rows: (passes.append(len(rows)), process(rows))
    for batch in (*small, big):
        e.submit(batch)
    asyncio.run(e._drain())
    assert passes == [CHUNK, 15]  # the five small batches and the big one's head, then its tail
    assert e.counters.get("detect.records") == 5 + CHUNK + 10 and e._queued == 0 and not e._queue
    assert [*small, big] == copies  # the pipeline's rows are shared with other subscribers: read-only
