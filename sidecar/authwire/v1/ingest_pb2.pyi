from authwire.v1 import auth_event_pb2 as _auth_event_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReportRequest(_message.Message):
    __slots__ = ("events", "drops")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    DROPS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_auth_event_pb2.AuthEvent]
    drops: ReporterDrops
    def __init__(self, events: _Optional[_Iterable[_Union[_auth_event_pb2.AuthEvent, _Mapping]]] = ..., drops: _Optional[_Union[ReporterDrops, _Mapping]] = ...) -> None: ...

class ReporterDrops(_message.Message):
    __slots__ = ("queue_full", "send_failed", "encode_failed")
    QUEUE_FULL_FIELD_NUMBER: _ClassVar[int]
    SEND_FAILED_FIELD_NUMBER: _ClassVar[int]
    ENCODE_FAILED_FIELD_NUMBER: _ClassVar[int]
    queue_full: int
    send_failed: int
    encode_failed: int
    def __init__(self, queue_full: _Optional[int] = ..., send_failed: _Optional[int] = ..., encode_failed: _Optional[int] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("index", "field", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    field: str
    reason: str
    def __init__(self, index: _Optional[int] = ..., field: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("accepted", "rejections")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    rejections: _containers.RepeatedCompositeFieldContainer[Rejection]
    def __init__(self, accepted: _Optional[int] = ..., rejections: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ...) -> None: ...
