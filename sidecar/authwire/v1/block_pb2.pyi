import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BlockedAddress(_message.Message):
    __slots__ = ("ip", "expires", "reason", "dropped", "would_drop")
    IP_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    WOULD_DROP_FIELD_NUMBER: _ClassVar[int]
    ip: str
    expires: _timestamp_pb2.Timestamp
    reason: str
    dropped: int
    would_drop: int
    def __init__(self, ip: _Optional[str] = ..., expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., dropped: _Optional[int] = ..., would_drop: _Optional[int] = ...) -> None: ...

class ListBlockedRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBlockedResponse(_message.Message):
    __slots__ = ("entries", "enforce")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    ENFORCE_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[BlockedAddress]
    enforce: bool
    def __init__(self, entries: _Optional[_Iterable[_Union[BlockedAddress, _Mapping]]] = ..., enforce: _Optional[bool] = ...) -> None: ...

class AddBlockRequest(_message.Message):
    __slots__ = ("ip", "ttl", "reason")
    IP_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ip: str
    ttl: _duration_pb2.Duration
    reason: str
    def __init__(self, ip: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class AddBlockResponse(_message.Message):
    __slots__ = ("added", "refused", "entry", "enforce")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    ENFORCE_FIELD_NUMBER: _ClassVar[int]
    added: bool
    refused: str
    entry: BlockedAddress
    enforce: bool
    def __init__(self, added: _Optional[bool] = ..., refused: _Optional[str] = ..., entry: _Optional[_Union[BlockedAddress, _Mapping]] = ..., enforce: _Optional[bool] = ...) -> None: ...

class RemoveBlockRequest(_message.Message):
    __slots__ = ("ip",)
    IP_FIELD_NUMBER: _ClassVar[int]
    ip: str
    def __init__(self, ip: _Optional[str] = ...) -> None: ...

class RemoveBlockResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    def __init__(self, removed: _Optional[bool] = ...) -> None: ...
