"""The few fields of an EnrichedRecord the detections read, taken out of the protobuf once per record.

Reading a protobuf field costs ~50-100 ns (each nested message access builds a wrapper), so the engine fills
one reused RecordFields per record (no allocation per record beyond the strings protobuf hands out) and
every detector reads plain attributes. Stack facts are set only when they describe the client: an EXACT join
not behind a proxy (behind one, the SYN is the proxy's) and a SYN actually seen (not mid-stream).
"""

from __future__ import annotations

from authwire.v1 import auth_event_pb2, record_pb2

SUCCESS = auth_event_pb2.AUTH_OUTCOME_SUCCESS
FAILURE = auth_event_pb2.AUTH_OUTCOME_FAILURE
_EXACT = record_pb2.JOIN_STATUS_EXACT
_JWT = auth_event_pb2.AUTH_METHOD_JWT


class RecordFields:
    __slots__ = ("record", "time", "request_id", "client_ip", "outcome", "credential", "token", "signature",
                 "hops", "os_hint", "uid", "rtt_us")

    def __init__(self) -> None:
        self.record: record_pb2.EnrichedRecord | None = None
        self.time = 0.0          # request start, epoch seconds
        self.request_id = ""
        self.client_ip = ""      # TCP peer as the gateway saw it (what a block would apply to)
        self.outcome = 0
        self.credential = ""     # credential id, else consumer, else JWT sub ("" when none was presented)
        self.token = ""          # "jti:<hash>" for a JWT with a jti, else "" (replay keys on the token)
        self.signature = ""      # SYN signature, "" when the stack is unknown for this record
        self.hops = 0
        self.os_hint = ""
        self.uid = ""            # kernel connection uid ("" without an EXACT join)
        self.rtt_us = 0

    def fill(self, record: record_pb2.EnrichedRecord) -> RecordFields:
        event = record.event
        auth = event.auth
        start = event.start_time
        self.record = record
        self.time = start.seconds + start.nanos * 1e-9
        self.request_id = event.request_id
        self.client_ip = event.client.ip
        self.outcome = outcome = auth.outcome
        self.credential = auth.credential_id or auth.consumer
        self.token = ""
        if auth.method == _JWT and (outcome == SUCCESS or not self.credential):
            jwt = auth.jwt
            if not self.credential:
                self.credential = jwt.sub
            if jwt.jti_hash:
                self.token = "jti:" + jwt.jti_hash
        join = record.join
        if join.status == _EXACT and not join.behind_proxy:
            conn = record.connection
            syn = conn.syn
            self.uid = conn.uid
            self.signature = syn.signature if not conn.mid_stream else ""
            self.hops = syn.hop_distance
            self.os_hint = syn.os_hint
            rtt = conn.handshake_rtt
            self.rtt_us = rtt.seconds * 1_000_000 + rtt.nanos // 1000
        else:
            self.uid = ""
            self.signature = ""
            self.hops = 0
            self.os_hint = ""
            self.rtt_us = 0
        return self


def stack_text(signature: str, hops: int) -> str:
    """How alerts name a TCP stack: the SYN signature and the hop distance."""
    return f"{signature}/hops={hops}"
