"""The few fields of an EnrichedRecord the detections read, taken out of the protobuf once per record.

Reading a protobuf field costs ~50-100 ns (each nested message access builds a wrapper), so the engine fills
one reused RecordFields per record (no allocation per record beyond the strings protobuf hands out) and
every detector reads plain attributes. Stack facts are set only when they describe the client: an EXACT join
not behind a proxy (behind one, the SYN is the proxy's) and a SYN actually seen (not mid-stream).
"""

from __future__ import annotations

from authwire.v1 import auth_event_pb2, connection_pb2, record_pb2

SUCCESS = auth_event_pb2.AUTH_OUTCOME_SUCCESS
FAILURE = auth_event_pb2.AUTH_OUTCOME_FAILURE
_EXACT = record_pb2.JOIN_STATUS_EXACT
_JWT = auth_event_pb2.AUTH_METHOD_JWT


class RecordFields:
    """Read per record: time, client_ip, outcome, credential, token, signature, hops, os_hint. Everything
    else a detector needs only for some records (request id, connection uid, RTT, User-Agent) it reads from
    `event` / `conn` itself, so the common record pays for none of it."""

    __slots__ = ("event", "conn", "time", "client_ip", "outcome", "credential", "token", "signature", "hops",
                 "os_hint")

    def __init__(self) -> None:
        self.event: auth_event_pb2.AuthEvent | None = None
        self.conn: connection_pb2.Connection | None = None  # set only when the stack facts are the client's
        self.time = 0.0          # request start, epoch seconds
        self.client_ip = ""      # TCP peer as the gateway saw it (what a block would apply to)
        self.outcome = 0
        self.credential = ""     # credential id, else consumer; for a JWT its sub, else consumer ("" = none)
        self.token = ""          # "jti:<hash>" for a successful JWT with a jti, else "" (replay keys on it)
        self.signature = ""      # SYN signature, "" when the stack is unknown for this record
        self.hops = 0
        self.os_hint = ""

    def fill(self, record: record_pb2.EnrichedRecord) -> RecordFields:
        self.event = event = record.event
        auth = event.auth
        start = event.start_time
        self.time = start.seconds + start.nanos * 1e-9
        self.client_ip = event.client.ip
        self.outcome = outcome = auth.outcome
        self.token = ""
        if auth.method == _JWT:
            # A JWT's credential id is often the issuer's signing key id (Envoy: the kid), shared by every
            # user: the consumer the gateway mapped it to (or else the subject) names the user instead.
            self.credential = auth.consumer
            if outcome == SUCCESS:
                jwt = auth.jwt
                if not self.credential:
                    self.credential = jwt.sub
                jti = jwt.jti_hash
                if jti:
                    self.token = "jti:" + jti
            elif not self.credential:
                self.credential = auth.jwt.sub
        else:
            self.credential = auth.credential_id or auth.consumer
        join = record.join
        if join.status == _EXACT and not join.behind_proxy:
            self.conn = conn = record.connection
            syn = conn.syn
            self.signature = syn.signature if not conn.mid_stream else ""
            self.hops = syn.hop_distance
            self.os_hint = syn.os_hint
        else:
            self.conn = None
            self.signature = ""
            self.hops = 0
            self.os_hint = ""
        return self

    @property
    def request_id(self) -> str:
        return self.event.request_id

    @property
    def uid(self) -> str:
        return self.conn.uid if self.conn is not None else ""

    @property
    def rtt_us(self) -> int:
        if self.conn is None:
            return 0
        rtt = self.conn.handshake_rtt
        return rtt.seconds * 1_000_000 + rtt.nanos // 1000


def stack_text(signature: str, hops: int) -> str:
    """How alerts name a TCP stack: the SYN signature and the hop distance."""
    return f"{signature}/hops={hops}"
