import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GatewayKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GATEWAY_KIND_UNSPECIFIED: _ClassVar[GatewayKind]
    GATEWAY_KIND_APISIX: _ClassVar[GatewayKind]
    GATEWAY_KIND_KONG: _ClassVar[GatewayKind]
    GATEWAY_KIND_ENVOY: _ClassVar[GatewayKind]
    GATEWAY_KIND_OTHER: _ClassVar[GatewayKind]

class AuthMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUTH_METHOD_UNSPECIFIED: _ClassVar[AuthMethod]
    AUTH_METHOD_NONE: _ClassVar[AuthMethod]
    AUTH_METHOD_JWT: _ClassVar[AuthMethod]
    AUTH_METHOD_BASIC: _ClassVar[AuthMethod]
    AUTH_METHOD_HMAC: _ClassVar[AuthMethod]
    AUTH_METHOD_KEY_AUTH: _ClassVar[AuthMethod]
    AUTH_METHOD_OAUTH2: _ClassVar[AuthMethod]
    AUTH_METHOD_OTHER: _ClassVar[AuthMethod]

class AuthOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUTH_OUTCOME_UNSPECIFIED: _ClassVar[AuthOutcome]
    AUTH_OUTCOME_NOT_ATTEMPTED: _ClassVar[AuthOutcome]
    AUTH_OUTCOME_SUCCESS: _ClassVar[AuthOutcome]
    AUTH_OUTCOME_FAILURE: _ClassVar[AuthOutcome]

class FailureReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_REASON_UNSPECIFIED: _ClassVar[FailureReason]
    FAILURE_REASON_MISSING_CREDENTIALS: _ClassVar[FailureReason]
    FAILURE_REASON_INVALID_CREDENTIALS: _ClassVar[FailureReason]
    FAILURE_REASON_EXPIRED: _ClassVar[FailureReason]
    FAILURE_REASON_BAD_SIGNATURE: _ClassVar[FailureReason]
    FAILURE_REASON_UNKNOWN_KEY: _ClassVar[FailureReason]
    FAILURE_REASON_CLOCK_SKEW: _ClassVar[FailureReason]
    FAILURE_REASON_FORBIDDEN: _ClassVar[FailureReason]
    FAILURE_REASON_OTHER: _ClassVar[FailureReason]
GATEWAY_KIND_UNSPECIFIED: GatewayKind
GATEWAY_KIND_APISIX: GatewayKind
GATEWAY_KIND_KONG: GatewayKind
GATEWAY_KIND_ENVOY: GatewayKind
GATEWAY_KIND_OTHER: GatewayKind
AUTH_METHOD_UNSPECIFIED: AuthMethod
AUTH_METHOD_NONE: AuthMethod
AUTH_METHOD_JWT: AuthMethod
AUTH_METHOD_BASIC: AuthMethod
AUTH_METHOD_HMAC: AuthMethod
AUTH_METHOD_KEY_AUTH: AuthMethod
AUTH_METHOD_OAUTH2: AuthMethod
AUTH_METHOD_OTHER: AuthMethod
AUTH_OUTCOME_UNSPECIFIED: AuthOutcome
AUTH_OUTCOME_NOT_ATTEMPTED: AuthOutcome
AUTH_OUTCOME_SUCCESS: AuthOutcome
AUTH_OUTCOME_FAILURE: AuthOutcome
FAILURE_REASON_UNSPECIFIED: FailureReason
FAILURE_REASON_MISSING_CREDENTIALS: FailureReason
FAILURE_REASON_INVALID_CREDENTIALS: FailureReason
FAILURE_REASON_EXPIRED: FailureReason
FAILURE_REASON_BAD_SIGNATURE: FailureReason
FAILURE_REASON_UNKNOWN_KEY: FailureReason
FAILURE_REASON_CLOCK_SKEW: FailureReason
FAILURE_REASON_FORBIDDEN: FailureReason
FAILURE_REASON_OTHER: FailureReason

class Endpoint(_message.Message):
    __slots__ = ("ip", "port")
    IP_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    ip: str
    port: int
    def __init__(self, ip: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class Gateway(_message.Message):
    __slots__ = ("kind", "node", "version")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    kind: GatewayKind
    node: str
    version: str
    def __init__(self, kind: _Optional[_Union[GatewayKind, str]] = ..., node: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class HttpRequest(_message.Message):
    __slots__ = ("method", "host", "path", "status", "user_agent", "request_bytes", "response_bytes")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_BYTES_FIELD_NUMBER: _ClassVar[int]
    method: str
    host: str
    path: str
    status: int
    user_agent: str
    request_bytes: int
    response_bytes: int
    def __init__(self, method: _Optional[str] = ..., host: _Optional[str] = ..., path: _Optional[str] = ..., status: _Optional[int] = ..., user_agent: _Optional[str] = ..., request_bytes: _Optional[int] = ..., response_bytes: _Optional[int] = ...) -> None: ...

class JwtClaims(_message.Message):
    __slots__ = ("iss", "sub", "aud", "kid", "exp", "iat", "jti_hash", "alg")
    ISS_FIELD_NUMBER: _ClassVar[int]
    SUB_FIELD_NUMBER: _ClassVar[int]
    AUD_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    EXP_FIELD_NUMBER: _ClassVar[int]
    IAT_FIELD_NUMBER: _ClassVar[int]
    JTI_HASH_FIELD_NUMBER: _ClassVar[int]
    ALG_FIELD_NUMBER: _ClassVar[int]
    iss: str
    sub: str
    aud: str
    kid: str
    exp: int
    iat: int
    jti_hash: str
    alg: str
    def __init__(self, iss: _Optional[str] = ..., sub: _Optional[str] = ..., aud: _Optional[str] = ..., kid: _Optional[str] = ..., exp: _Optional[int] = ..., iat: _Optional[int] = ..., jti_hash: _Optional[str] = ..., alg: _Optional[str] = ...) -> None: ...

class Auth(_message.Message):
    __slots__ = ("method", "outcome", "plugin", "consumer", "credential_id", "reason", "message", "jwt")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    JWT_FIELD_NUMBER: _ClassVar[int]
    method: AuthMethod
    outcome: AuthOutcome
    plugin: str
    consumer: str
    credential_id: str
    reason: FailureReason
    message: str
    jwt: JwtClaims
    def __init__(self, method: _Optional[_Union[AuthMethod, str]] = ..., outcome: _Optional[_Union[AuthOutcome, str]] = ..., plugin: _Optional[str] = ..., consumer: _Optional[str] = ..., credential_id: _Optional[str] = ..., reason: _Optional[_Union[FailureReason, str]] = ..., message: _Optional[str] = ..., jwt: _Optional[_Union[JwtClaims, _Mapping]] = ...) -> None: ...

class AuthEvent(_message.Message):
    __slots__ = ("request_id", "start_time", "latency", "gateway", "client", "server", "forwarded_for", "gateway_connection_id", "connection_requests", "http", "route_id", "service_id", "auth")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    FORWARDED_FOR_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_CONNECTION_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    ROUTE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    start_time: _timestamp_pb2.Timestamp
    latency: _duration_pb2.Duration
    gateway: Gateway
    client: Endpoint
    server: Endpoint
    forwarded_for: str
    gateway_connection_id: int
    connection_requests: int
    http: HttpRequest
    route_id: str
    service_id: str
    auth: Auth
    def __init__(self, request_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., gateway: _Optional[_Union[Gateway, _Mapping]] = ..., client: _Optional[_Union[Endpoint, _Mapping]] = ..., server: _Optional[_Union[Endpoint, _Mapping]] = ..., forwarded_for: _Optional[str] = ..., gateway_connection_id: _Optional[int] = ..., connection_requests: _Optional[int] = ..., http: _Optional[_Union[HttpRequest, _Mapping]] = ..., route_id: _Optional[str] = ..., service_id: _Optional[str] = ..., auth: _Optional[_Union[Auth, _Mapping]] = ...) -> None: ...
