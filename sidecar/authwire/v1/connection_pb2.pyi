import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from authwire.v1 import auth_event_pb2 as _auth_event_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConnectionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONNECTION_STATE_UNSPECIFIED: _ClassVar[ConnectionState]
    CONNECTION_STATE_SYN_SENT: _ClassVar[ConnectionState]
    CONNECTION_STATE_SYN_RECEIVED: _ClassVar[ConnectionState]
    CONNECTION_STATE_ESTABLISHED: _ClassVar[ConnectionState]
    CONNECTION_STATE_CLOSING: _ClassVar[ConnectionState]
    CONNECTION_STATE_CLOSED: _ClassVar[ConnectionState]
    CONNECTION_STATE_RESET: _ClassVar[ConnectionState]
    CONNECTION_STATE_EVICTED: _ClassVar[ConnectionState]

class CloseInitiator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLOSE_INITIATOR_UNSPECIFIED: _ClassVar[CloseInitiator]
    CLOSE_INITIATOR_CLIENT: _ClassVar[CloseInitiator]
    CLOSE_INITIATOR_SERVER: _ClassVar[CloseInitiator]
CONNECTION_STATE_UNSPECIFIED: ConnectionState
CONNECTION_STATE_SYN_SENT: ConnectionState
CONNECTION_STATE_SYN_RECEIVED: ConnectionState
CONNECTION_STATE_ESTABLISHED: ConnectionState
CONNECTION_STATE_CLOSING: ConnectionState
CONNECTION_STATE_CLOSED: ConnectionState
CONNECTION_STATE_RESET: ConnectionState
CONNECTION_STATE_EVICTED: ConnectionState
CLOSE_INITIATOR_UNSPECIFIED: CloseInitiator
CLOSE_INITIATOR_CLIENT: CloseInitiator
CLOSE_INITIATOR_SERVER: CloseInitiator

class SynFingerprint(_message.Message):
    __slots__ = ("ttl", "df", "ip_id", "ecn", "tcp_ecn", "window", "option_kinds", "mss", "window_scale", "sack_permitted", "timestamps", "ip_version", "ip_options_len", "payload_bytes", "ts_val", "initial_ttl", "hop_distance", "signature", "os_hint")
    TTL_FIELD_NUMBER: _ClassVar[int]
    DF_FIELD_NUMBER: _ClassVar[int]
    IP_ID_FIELD_NUMBER: _ClassVar[int]
    ECN_FIELD_NUMBER: _ClassVar[int]
    TCP_ECN_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    OPTION_KINDS_FIELD_NUMBER: _ClassVar[int]
    MSS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SCALE_FIELD_NUMBER: _ClassVar[int]
    SACK_PERMITTED_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    IP_VERSION_FIELD_NUMBER: _ClassVar[int]
    IP_OPTIONS_LEN_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    TS_VAL_FIELD_NUMBER: _ClassVar[int]
    INITIAL_TTL_FIELD_NUMBER: _ClassVar[int]
    HOP_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    OS_HINT_FIELD_NUMBER: _ClassVar[int]
    ttl: int
    df: bool
    ip_id: int
    ecn: int
    tcp_ecn: bool
    window: int
    option_kinds: _containers.RepeatedScalarFieldContainer[int]
    mss: int
    window_scale: int
    sack_permitted: bool
    timestamps: bool
    ip_version: int
    ip_options_len: int
    payload_bytes: int
    ts_val: int
    initial_ttl: int
    hop_distance: int
    signature: str
    os_hint: str
    def __init__(self, ttl: _Optional[int] = ..., df: _Optional[bool] = ..., ip_id: _Optional[int] = ..., ecn: _Optional[int] = ..., tcp_ecn: _Optional[bool] = ..., window: _Optional[int] = ..., option_kinds: _Optional[_Iterable[int]] = ..., mss: _Optional[int] = ..., window_scale: _Optional[int] = ..., sack_permitted: _Optional[bool] = ..., timestamps: _Optional[bool] = ..., ip_version: _Optional[int] = ..., ip_options_len: _Optional[int] = ..., payload_bytes: _Optional[int] = ..., ts_val: _Optional[int] = ..., initial_ttl: _Optional[int] = ..., hop_distance: _Optional[int] = ..., signature: _Optional[str] = ..., os_hint: _Optional[str] = ...) -> None: ...

class DirectionCounters(_message.Message):
    __slots__ = ("packets", "bytes", "retransmits", "zero_windows", "rsts", "fins", "stack_retransmits")
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    RETRANSMITS_FIELD_NUMBER: _ClassVar[int]
    ZERO_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    RSTS_FIELD_NUMBER: _ClassVar[int]
    FINS_FIELD_NUMBER: _ClassVar[int]
    STACK_RETRANSMITS_FIELD_NUMBER: _ClassVar[int]
    packets: int
    bytes: int
    retransmits: int
    zero_windows: int
    rsts: int
    fins: int
    stack_retransmits: int
    def __init__(self, packets: _Optional[int] = ..., bytes: _Optional[int] = ..., retransmits: _Optional[int] = ..., zero_windows: _Optional[int] = ..., rsts: _Optional[int] = ..., fins: _Optional[int] = ..., stack_retransmits: _Optional[int] = ...) -> None: ...

class Connection(_message.Message):
    __slots__ = ("uid", "community_id", "client", "server", "syn_time", "established_time", "close_time", "handshake_rtt", "syn", "to_server", "to_client", "history", "state", "closed_by", "mid_stream", "last_seen", "interface", "synack_time", "client_socket_state", "server_socket_state")
    UID_FIELD_NUMBER: _ClassVar[int]
    COMMUNITY_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    SYN_TIME_FIELD_NUMBER: _ClassVar[int]
    ESTABLISHED_TIME_FIELD_NUMBER: _ClassVar[int]
    CLOSE_TIME_FIELD_NUMBER: _ClassVar[int]
    HANDSHAKE_RTT_FIELD_NUMBER: _ClassVar[int]
    SYN_FIELD_NUMBER: _ClassVar[int]
    TO_SERVER_FIELD_NUMBER: _ClassVar[int]
    TO_CLIENT_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CLOSED_BY_FIELD_NUMBER: _ClassVar[int]
    MID_STREAM_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    SYNACK_TIME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SOCKET_STATE_FIELD_NUMBER: _ClassVar[int]
    SERVER_SOCKET_STATE_FIELD_NUMBER: _ClassVar[int]
    uid: str
    community_id: str
    client: _auth_event_pb2.Endpoint
    server: _auth_event_pb2.Endpoint
    syn_time: _timestamp_pb2.Timestamp
    established_time: _timestamp_pb2.Timestamp
    close_time: _timestamp_pb2.Timestamp
    handshake_rtt: _duration_pb2.Duration
    syn: SynFingerprint
    to_server: DirectionCounters
    to_client: DirectionCounters
    history: str
    state: ConnectionState
    closed_by: CloseInitiator
    mid_stream: bool
    last_seen: _timestamp_pb2.Timestamp
    interface: str
    synack_time: _timestamp_pb2.Timestamp
    client_socket_state: str
    server_socket_state: str
    def __init__(self, uid: _Optional[str] = ..., community_id: _Optional[str] = ..., client: _Optional[_Union[_auth_event_pb2.Endpoint, _Mapping]] = ..., server: _Optional[_Union[_auth_event_pb2.Endpoint, _Mapping]] = ..., syn_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., established_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., close_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., handshake_rtt: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., syn: _Optional[_Union[SynFingerprint, _Mapping]] = ..., to_server: _Optional[_Union[DirectionCounters, _Mapping]] = ..., to_client: _Optional[_Union[DirectionCounters, _Mapping]] = ..., history: _Optional[str] = ..., state: _Optional[_Union[ConnectionState, str]] = ..., closed_by: _Optional[_Union[CloseInitiator, str]] = ..., mid_stream: _Optional[bool] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., interface: _Optional[str] = ..., synack_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., client_socket_state: _Optional[str] = ..., server_socket_state: _Optional[str] = ...) -> None: ...
