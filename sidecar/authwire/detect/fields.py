"""The few fields of a committed record the detections read, taken out of its plain row once per record.

The engine gets the pipeline's plain rows (authwire.store.columns: a tuple in NAMES order, row[CONN] the
joined Connection message or None), so the common fields are tuple indexing; only the connection's facts are
protobuf reads, and those are read once per Connection object (every row of a connection shares the same
object) and cached. The engine fills one reused RecordFields per record and every detector reads plain
attributes. Stack facts are set only when they describe the client: an EXACT join not behind a proxy
(behind one, the SYN is the proxy's) and a SYN actually seen (not mid-stream).
"""

from __future__ import annotations

from authwire.store.columns import CONN, INDEX
from authwire.v1 import auth_event_pb2, connection_pb2, record_pb2

SUCCESS = auth_event_pb2.AUTH_OUTCOME_SUCCESS
FAILURE = auth_event_pb2.AUTH_OUTCOME_FAILURE
_EXACT = record_pb2.JOIN_STATUS_EXACT
_JWT = auth_event_pb2.AUTH_METHOD_JWT
# A row's EXACT join always carries its Connection; should one not, it reads as an empty one (no stack).
_NO_CONNECTION = connection_pb2.Connection()
CONNECTIONS_CACHED = 8192  # Connection objects whose facts are kept (cleared when full: a cache)

_TIME = INDEX["time_ns"]
_REQUEST_ID = INDEX["request_id"]
_GATEWAY_NODE = INDEX["gateway_node"]
_CLIENT_IP = INDEX["client_ip"]
_GATEWAY_CONNECTION_ID = INDEX["gateway_connection_id"]
_USER_AGENT = INDEX["user_agent"]
_AUTH_METHOD = INDEX["auth_method"]
_OUTCOME = INDEX["outcome"]
_CONSUMER = INDEX["consumer"]
_CREDENTIAL_ID = INDEX["credential_id"]
_JWT_SUB = INDEX["jwt_sub"]
_JTI_HASH = INDEX["jwt_jti_hash"]
_JOIN_STATUS = INDEX["join_status"]
_BEHIND_PROXY = INDEX["behind_proxy"]


def connection_facts(conn: connection_pb2.Connection) -> tuple:
    """(conn, SYN signature or "" when mid-stream, hop distance, OS hint, uid): what the detections read of
    a connection, once per Connection object (the object is kept with them: its id stays unique)."""
    syn = conn.syn
    return conn, syn.signature if not conn.mid_stream else "", syn.hop_distance, syn.os_hint, conn.uid


class RecordFields:
    """Read per record: time, client_ip, outcome, credential, token, and the client's stack (signature,
    hops, os_hint, uid). Everything else a detector needs only for some records (request id, RTT,
    User-Agent, the gateway's connection id) it reads through the properties below, so the common record
    pays for none of it."""

    __slots__ = ("row", "conn", "time", "client_ip", "outcome", "credential", "token", "signature", "hops",
                 "os_hint", "uid", "_facts")

    def __init__(self) -> None:
        self.row: tuple = ()
        self.conn: connection_pb2.Connection | None = None  # set only when the stack facts are the client's
        self.time = 0.0          # request start, epoch seconds
        self.client_ip = ""      # TCP peer as the gateway saw it (what a block would apply to)
        self.outcome = 0
        self.credential = ""     # credential id, else consumer; for a JWT its sub, else consumer ("" = none)
        self.token = ""          # "jti:<hash>" for a successful JWT with a jti, else "" (replay keys on it)
        self.signature = ""      # SYN signature, "" when the stack is unknown for this record
        self.hops = 0
        self.os_hint = ""
        self.uid = ""            # the connection's uid when the stack facts are the client's, else ""
        self._facts: dict[int, tuple] = {}  # id(Connection) -> connection_facts()

    def fill(self, row: tuple) -> RecordFields:
        self.row = row
        t = row[_TIME]
        if t is None:
            self.time = 0.0
        else:  # as Timestamp seconds + nanos * 1e-9 (what the alerts' times were always computed from)
            seconds, nanos = divmod(t, 1_000_000_000)
            self.time = seconds + nanos * 1e-9
        self.client_ip = row[_CLIENT_IP]
        self.outcome = outcome = row[_OUTCOME]
        self.token = ""
        if row[_AUTH_METHOD] == _JWT:
            # A JWT's credential id is often the issuer's signing key id (Envoy: the kid), shared by every
            # user: the consumer the gateway mapped it to (or else the subject) names the user instead.
            self.credential = row[_CONSUMER] or row[_JWT_SUB]
            if outcome == SUCCESS:
                jti = row[_JTI_HASH]
                if jti:
                    self.token = "jti:" + jti
        else:
            self.credential = row[_CREDENTIAL_ID] or row[_CONSUMER]
        if row[_JOIN_STATUS] == _EXACT and not row[_BEHIND_PROXY]:
            conn = row[CONN]
            if conn is None:
                conn = _NO_CONNECTION
            facts = self._facts.get(id(conn))
            if facts is None:
                if len(self._facts) >= CONNECTIONS_CACHED:
                    self._facts.clear()
                facts = self._facts[id(conn)] = connection_facts(conn)
            self.conn, self.signature, self.hops, self.os_hint, self.uid = facts
        else:
            self.conn = None
            self.signature = ""
            self.hops = 0
            self.os_hint = ""
            self.uid = ""
        return self

    @property
    def request_id(self) -> str:
        return self.row[_REQUEST_ID]

    @property
    def user_agent(self) -> str:
        return self.row[_USER_AGENT]

    @property
    def gateway_connection_id(self) -> int:
        return self.row[_GATEWAY_CONNECTION_ID]

    @property
    def gateway_node(self) -> str:
        return self.row[_GATEWAY_NODE]

    @property
    def rtt_us(self) -> int:
        if self.conn is None:
            return 0
        rtt = self.conn.handshake_rtt
        return rtt.seconds * 1_000_000 + rtt.nanos // 1000


def stack_text(signature: str, hops: int) -> str:
    """How alerts name a TCP stack: the SYN signature and the hop distance."""
    return f"{signature}/hops={hops}"
