import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from authwire.v1 import auth_event_pb2 as _auth_event_pb2
from authwire.v1 import connection_pb2 as _connection_pb2
from authwire.v1 import record_pb2 as _record_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Filters(_message.Message):
    __slots__ = ("since", "until", "consumer", "credential_id", "client_ip", "outcome", "method", "route_id", "status", "request_id", "community_id", "os_hint", "min_rtt_us", "max_rtt_us", "retransmits_gt", "hop_distance", "syn_signature", "join_status", "reason")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ROUTE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    COMMUNITY_ID_FIELD_NUMBER: _ClassVar[int]
    OS_HINT_FIELD_NUMBER: _ClassVar[int]
    MIN_RTT_US_FIELD_NUMBER: _ClassVar[int]
    MAX_RTT_US_FIELD_NUMBER: _ClassVar[int]
    RETRANSMITS_GT_FIELD_NUMBER: _ClassVar[int]
    HOP_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    SYN_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    JOIN_STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    consumer: str
    credential_id: str
    client_ip: str
    outcome: _auth_event_pb2.AuthOutcome
    method: _auth_event_pb2.AuthMethod
    route_id: str
    status: int
    request_id: str
    community_id: str
    os_hint: str
    min_rtt_us: int
    max_rtt_us: int
    retransmits_gt: int
    hop_distance: int
    syn_signature: str
    join_status: _record_pb2.JoinStatus
    reason: _auth_event_pb2.FailureReason
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., consumer: _Optional[str] = ..., credential_id: _Optional[str] = ..., client_ip: _Optional[str] = ..., outcome: _Optional[_Union[_auth_event_pb2.AuthOutcome, str]] = ..., method: _Optional[_Union[_auth_event_pb2.AuthMethod, str]] = ..., route_id: _Optional[str] = ..., status: _Optional[int] = ..., request_id: _Optional[str] = ..., community_id: _Optional[str] = ..., os_hint: _Optional[str] = ..., min_rtt_us: _Optional[int] = ..., max_rtt_us: _Optional[int] = ..., retransmits_gt: _Optional[int] = ..., hop_distance: _Optional[int] = ..., syn_signature: _Optional[str] = ..., join_status: _Optional[_Union[_record_pb2.JoinStatus, str]] = ..., reason: _Optional[_Union[_auth_event_pb2.FailureReason, str]] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("filters", "limit", "page_token", "group_by")
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    filters: Filters
    limit: int
    page_token: str
    group_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, filters: _Optional[_Union[Filters, _Mapping]] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ..., group_by: _Optional[_Iterable[str]] = ...) -> None: ...

class Group(_message.Message):
    __slots__ = ("values", "count")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    count: int
    def __init__(self, values: _Optional[_Iterable[str]] = ..., count: _Optional[int] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("records", "next_page_token", "groups")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[_record_pb2.EnrichedRecord]
    next_page_token: str
    groups: _containers.RepeatedCompositeFieldContainer[Group]
    def __init__(self, records: _Optional[_Iterable[_Union[_record_pb2.EnrichedRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[Group, _Mapping]]] = ...) -> None: ...

class TailRequest(_message.Message):
    __slots__ = ("filters", "backlog")
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    filters: Filters
    backlog: int
    def __init__(self, filters: _Optional[_Union[Filters, _Mapping]] = ..., backlog: _Optional[int] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Counter(_message.Message):
    __slots__ = ("name", "label", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    label: str
    value: int
    def __init__(self, name: _Optional[str] = ..., label: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("counters", "store_records", "store_bytes", "inspector_running", "inspector_status", "started", "store_alerts")
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    STORE_RECORDS_FIELD_NUMBER: _ClassVar[int]
    STORE_BYTES_FIELD_NUMBER: _ClassVar[int]
    INSPECTOR_RUNNING_FIELD_NUMBER: _ClassVar[int]
    INSPECTOR_STATUS_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    STORE_ALERTS_FIELD_NUMBER: _ClassVar[int]
    counters: _containers.RepeatedCompositeFieldContainer[Counter]
    store_records: int
    store_bytes: int
    inspector_running: bool
    inspector_status: str
    started: _timestamp_pb2.Timestamp
    store_alerts: int
    def __init__(self, counters: _Optional[_Iterable[_Union[Counter, _Mapping]]] = ..., store_records: _Optional[int] = ..., store_bytes: _Optional[int] = ..., inspector_running: _Optional[bool] = ..., inspector_status: _Optional[str] = ..., started: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., store_alerts: _Optional[int] = ...) -> None: ...

class ConnectionsRequest(_message.Message):
    __slots__ = ("client_ip", "include_closed")
    CLIENT_IP_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CLOSED_FIELD_NUMBER: _ClassVar[int]
    client_ip: str
    include_closed: bool
    def __init__(self, client_ip: _Optional[str] = ..., include_closed: _Optional[bool] = ...) -> None: ...

class ConnectionsResponse(_message.Message):
    __slots__ = ("connections",)
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    connections: _containers.RepeatedCompositeFieldContainer[_connection_pb2.Connection]
    def __init__(self, connections: _Optional[_Iterable[_Union[_connection_pb2.Connection, _Mapping]]] = ...) -> None: ...

class AlertFilters(_message.Message):
    __slots__ = ("since", "until", "detections", "min_severity", "key", "client_ip", "id")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    MIN_SEVERITY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    detections: _containers.RepeatedScalarFieldContainer[str]
    min_severity: _record_pb2.AlertSeverity
    key: str
    client_ip: str
    id: str
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., detections: _Optional[_Iterable[str]] = ..., min_severity: _Optional[_Union[_record_pb2.AlertSeverity, str]] = ..., key: _Optional[str] = ..., client_ip: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class AlertsRequest(_message.Message):
    __slots__ = ("filters", "limit", "page_token")
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    filters: AlertFilters
    limit: int
    page_token: str
    def __init__(self, filters: _Optional[_Union[AlertFilters, _Mapping]] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class AlertsResponse(_message.Message):
    __slots__ = ("alerts", "next_page_token")
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[_record_pb2.Alert]
    next_page_token: str
    def __init__(self, alerts: _Optional[_Iterable[_Union[_record_pb2.Alert, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class TailAlertsRequest(_message.Message):
    __slots__ = ("filters", "backlog")
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    filters: AlertFilters
    backlog: int
    def __init__(self, filters: _Optional[_Union[AlertFilters, _Mapping]] = ..., backlog: _Optional[int] = ...) -> None: ...
