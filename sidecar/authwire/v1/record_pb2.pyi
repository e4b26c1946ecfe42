import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from authwire.v1 import auth_event_pb2 as _auth_event_pb2
from authwire.v1 import connection_pb2 as _connection_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JoinStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOIN_STATUS_UNSPECIFIED: _ClassVar[JoinStatus]
    JOIN_STATUS_EXACT: _ClassVar[JoinStatus]
    JOIN_STATUS_NO_CONNECTION: _ClassVar[JoinStatus]
    JOIN_STATUS_INSPECTOR_OFF: _ClassVar[JoinStatus]

class AlertSeverity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_SEVERITY_UNSPECIFIED: _ClassVar[AlertSeverity]
    ALERT_SEVERITY_INFO: _ClassVar[AlertSeverity]
    ALERT_SEVERITY_WARNING: _ClassVar[AlertSeverity]
    ALERT_SEVERITY_CRITICAL: _ClassVar[AlertSeverity]
JOIN_STATUS_UNSPECIFIED: JoinStatus
JOIN_STATUS_EXACT: JoinStatus
JOIN_STATUS_NO_CONNECTION: JoinStatus
JOIN_STATUS_INSPECTOR_OFF: JoinStatus
ALERT_SEVERITY_UNSPECIFIED: AlertSeverity
ALERT_SEVERITY_INFO: AlertSeverity
ALERT_SEVERITY_WARNING: AlertSeverity
ALERT_SEVERITY_CRITICAL: AlertSeverity

class Join(_message.Message):
    __slots__ = ("status", "kernel_events_lost", "connection_age", "kernel_request_index", "behind_proxy", "waited")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_EVENTS_LOST_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_AGE_FIELD_NUMBER: _ClassVar[int]
    KERNEL_REQUEST_INDEX_FIELD_NUMBER: _ClassVar[int]
    BEHIND_PROXY_FIELD_NUMBER: _ClassVar[int]
    WAITED_FIELD_NUMBER: _ClassVar[int]
    status: JoinStatus
    kernel_events_lost: int
    connection_age: _duration_pb2.Duration
    kernel_request_index: int
    behind_proxy: bool
    waited: _duration_pb2.Duration
    def __init__(self, status: _Optional[_Union[JoinStatus, str]] = ..., kernel_events_lost: _Optional[int] = ..., connection_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., kernel_request_index: _Optional[int] = ..., behind_proxy: _Optional[bool] = ..., waited: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class EnrichedRecord(_message.Message):
    __slots__ = ("event", "connection", "join", "received_time")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    JOIN_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_TIME_FIELD_NUMBER: _ClassVar[int]
    event: _auth_event_pb2.AuthEvent
    connection: _connection_pb2.Connection
    join: Join
    received_time: _timestamp_pb2.Timestamp
    def __init__(self, event: _Optional[_Union[_auth_event_pb2.AuthEvent, _Mapping]] = ..., connection: _Optional[_Union[_connection_pb2.Connection, _Mapping]] = ..., join: _Optional[_Union[Join, _Mapping]] = ..., received_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("id", "detection", "severity", "time", "summary", "request_ids", "client", "key", "first_time", "last_time", "updated_time", "clients", "connection_uids", "evidence", "credentials", "stack", "blocked")
    class EvidenceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    DETECTION_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    FIRST_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATED_TIME_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_UIDS_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    STACK_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    id: str
    detection: str
    severity: AlertSeverity
    time: _timestamp_pb2.Timestamp
    summary: str
    request_ids: _containers.RepeatedScalarFieldContainer[str]
    client: _auth_event_pb2.Endpoint
    key: str
    first_time: _timestamp_pb2.Timestamp
    last_time: _timestamp_pb2.Timestamp
    updated_time: _timestamp_pb2.Timestamp
    clients: _containers.RepeatedScalarFieldContainer[str]
    connection_uids: _containers.RepeatedScalarFieldContainer[str]
    evidence: _containers.ScalarMap[str, float]
    credentials: _containers.RepeatedScalarFieldContainer[str]
    stack: str
    blocked: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., detection: _Optional[str] = ..., severity: _Optional[_Union[AlertSeverity, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., summary: _Optional[str] = ..., request_ids: _Optional[_Iterable[str]] = ..., client: _Optional[_Union[_auth_event_pb2.Endpoint, _Mapping]] = ..., key: _Optional[str] = ..., first_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., clients: _Optional[_Iterable[str]] = ..., connection_uids: _Optional[_Iterable[str]] = ..., evidence: _Optional[_Mapping[str, float]] = ..., credentials: _Optional[_Iterable[str]] = ..., stack: _Optional[str] = ..., blocked: _Optional[_Iterable[str]] = ...) -> None: ...
