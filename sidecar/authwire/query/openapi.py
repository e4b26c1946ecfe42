"""The OpenAPI 3.1 document of the HTTP/JSON API (`GET /openapi.json`), generated from what the server runs:

- paths and parameters from authwire.query.http_api.OPERATIONS and the filter table
  (authwire.query.filters.FILTERS), whose schemas are the grammars the parser checks first;
- response bodies from the protobuf descriptors, in the proto3 JSON mapping that authwire.records.to_dict
  writes (64-bit integers as strings, enums by name, Timestamps as RFC 3339, Durations as "1.5s", fields at
  their default left out), with additionalProperties false: a field the document does not name is a bug.

tests/web/test_openapi.py runs schemathesis against a live server with this document, every check on.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from authwire import __version__
from authwire.query import filters as flt
from authwire.v1 import connection_pb2, query_pb2, record_pb2

_INTS_32 = {FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
            FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
            FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1)}
_INTS_64 = {FieldDescriptor.TYPE_INT64: r"^-?[0-9]+$", FieldDescriptor.TYPE_SINT64: r"^-?[0-9]+$",
            FieldDescriptor.TYPE_SFIXED64: r"^-?[0-9]+$", FieldDescriptor.TYPE_UINT64: r"^[0-9]+$",
            FieldDescriptor.TYPE_FIXED64: r"^[0-9]+$"}
TIMESTAMP = {"type": "string", "format": "date-time"}
DURATION = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{3}|\.[0-9]{6}|\.[0-9]{9})?s$"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _field_schema(fd: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        name = fd.message_type.full_name
        if fd.message_type.GetOptions().map_entry:  # map<K, V>: a JSON object, keys as text
            return {"type": "object", "additionalProperties": _field_schema(fd.message_type.fields_by_name["value"],
                                                                            schemas)}
        if name == "google.protobuf.Timestamp":
            return dict(TIMESTAMP)
        if name == "google.protobuf.Duration":
            return dict(DURATION)
        message_schema(fd.message_type, schemas)
        return _ref(name)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return {"type": "string", "enum": [v.name for v in fd.enum_type.values]}
    if fd.type in _INTS_32:
        low, high = _INTS_32[fd.type]
        return {"type": "integer", "minimum": low, "maximum": high}
    if fd.type in _INTS_64:
        return {"type": "string", "pattern": _INTS_64[fd.type]}
    if fd.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return {"oneOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]}
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return {"type": "boolean"}
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return {"type": "string", "contentEncoding": "base64"}
    return {"type": "string"}


def message_schema(descriptor: Descriptor, schemas: dict[str, Any]) -> dict[str, str]:
    """Add the JSON Schema of a message (and of every message it holds) to schemas; return its $ref."""
    name = descriptor.full_name
    if name not in schemas:
        schemas[name] = {}  # placeholder first: messages may refer to each other
        properties: dict[str, Any] = {}
        for fd in descriptor.fields:
            item = _field_schema(fd, schemas)
            is_map = fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry
            properties[fd.name] = {"type": "array", "items": item} if fd.is_repeated and not is_map else item
        schemas[name] = {"type": "object", "properties": properties, "additionalProperties": False}
        if descriptor.GetOptions().deprecated:
            schemas[name]["deprecated"] = True
    return _ref(name)


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _custom_schemas() -> dict[str, Any]:
    group, connection = _ref("authwire.v1.Group"), _ref("authwire.v1.Connection")
    groups = {"type": "array", "items": group}
    inspect_props = {
        "ip": {"type": "string"},
        "requests": {"type": "integer", "minimum": 0},
        "first_seen": TIMESTAMP, "last_seen": TIMESTAMP,
        "outcomes": groups, "reasons": groups, "routes": groups, "credentials": groups, "consumers": groups,
        "stacks": groups,
        "user_agents": {"type": "array", "items": _object(
            {"user_agent": {"type": "string"}, "count": {"type": "integer", "minimum": 1}}, ["user_agent", "count"])},
        "connections": {"type": "array", "items": connection},
        "live_connections": {"type": "array", "items": connection},
        "recent": {"type": "array", "items": _ref("authwire.v1.EnrichedRecord")},
        "alerts": {"type": "array", "items": _ref("authwire.v1.Alert")},
    }
    return {
        "Inspect": {**_object(inspect_props, [k for k in inspect_props if k not in ("first_seen", "last_seen")]),
                    "description": "groups: values in the order of the names in the field's description; "
                                   "outcomes [auth.outcome], reasons [auth.outcome, auth.reason], routes "
                                   "[route_id, auth.outcome], credentials [credential_id, auth.method, "
                                   "auth.outcome], consumers [consumer, auth.outcome], stacks [syn.signature, "
                                   "syn.os_hint, syn.hop_distance]; connections: from its most recent records"},
        "Timeline": _object({
            "split_by": {"type": "string"},
            "bucket_seconds": {"type": "number", "minimum": 0},
            "since": TIMESTAMP, "until": TIMESTAMP,
            "buckets": {"type": "array", "items": _object({"start": TIMESTAMP, "groups": groups},
                                                          ["start", "groups"])},
        }, ["split_by", "bucket_seconds", "buckets"]),
        "Problem": {
            "type": "object", "required": ["type", "title", "status"],
            "properties": {
                "type": {"type": "string"}, "title": {"type": "string"},
                "status": {"type": "integer", "minimum": 400, "maximum": 599}, "detail": {"type": "string"},
                "invalid_params": {"type": "array", "items": _object(
                    {"name": {"type": "string"}, "reason": {"type": "string"}}, ["name", "reason"])},
            },
            "description": "RFC 9457 problem details; invalid_params names each bad parameter and why",
        },
    }


_ERRORS = {400: "a parameter is unknown, repeated or has a bad value (named in invalid_params)",
           401: "no bearer token or session (see --token-file)",
           404: "not found", 429: "busy with other queries (Retry-After says when to retry)"}


def _parameter(name: str, help: str, schema: dict[str, Any], where: str = "query",
               required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "description": help, "required": required or where == "path",
            "schema": schema}


def document() -> dict[str, Any]:
    from authwire.query.http_api import OPERATIONS, PAGES, STATIC, WEB_FILES

    schemas: dict[str, Any] = {}
    for message in (query_pb2.QueryResponse, record_pb2.EnrichedRecord, query_pb2.ConnectionsResponse,
                    query_pb2.StatsResponse, connection_pb2.Connection, query_pb2.Group, query_pb2.AlertsResponse,
                    record_pb2.Alert):
        message_schema(message.DESCRIPTOR, schemas)
    schemas.update(_custom_schemas())
    problem = {"application/problem+json": {"schema": _ref("Problem")}}
    paths: dict[str, Any] = {}
    for op in OPERATIONS:
        params = [_parameter(p.name, p.help, p.schema, "path") for p in op.path_params]
        if op.filters == "records":
            params += [_parameter(s.name, s.help, s.schema) for s in flt.FILTERS]
        elif op.filters == "alerts":
            params += [_parameter(s.name, s.help, s.schema) for s in flt.ALERT_FILTERS]
        params += [_parameter(p.name, p.help, p.schema, required=getattr(p, "required", False))
                   for p in op.params if p.name not in {q["name"] for q in params}]
        responses: dict[str, Any] = {"200": {"description": "OK",
                                             "content": {"application/json": {"schema": _ref(op.response)}}}}
        for status in (*op.errors, 429):
            responses[str(status)] = {"description": _ERRORS[status], "content": problem}
        paths[op.path] = {"get": {"operationId": op.handler, "summary": op.summary, "parameters": params,
                                  "responses": responses}}
    for page in PAGES:
        params = [_parameter(p.name, p.help, p.schema, required=p.required) for p in page.params]
        if page.filters == "records":
            params += [_parameter(s.name, s.help, s.schema) for s in flt.FILTERS]
        responses = {
            "200": {"description": "the page (it loads its data from /v1/*)",
                    "content": {"text/html": {"schema": {"type": "string"}}}},
            "400": {"description": _ERRORS[400], "content": problem},
            "401": {"description": "no session: how to get a login link",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
        }
        if any(p.name == "login" for p in page.params):
            responses["303"] = {"description": "login accepted: a session cookie (HttpOnly, SameSite=Strict) and "
                                               "a redirect to /",
                                "headers": {"Location": {"schema": {"type": "string", "const": "/"}}}}
        paths[page.path] = {"get": {"operationId": "page" + page.path.replace("/", "_"), "summary": page.summary,
                                    "security": [], "parameters": params, "responses": responses}}
    paths[STATIC.path] = {"get": {
        "operationId": "asset", "summary": STATIC.summary, "security": [],
        "parameters": [_parameter("name", "file name", {"type": "string", "enum": sorted(WEB_FILES)}, "path")],
        "responses": {"200": {"description": "the file",
                              "content": {ctype: {"schema": {"type": "string"}} for ctype in sorted(
                                  set(WEB_FILES.values()))}},
                      "404": {"description": "no such file", "content": problem}},
    }}
    paths["/openapi.json"] = {"get": {
        "operationId": "openapi", "summary": "This document", "security": [],
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}},
    }}
    return {
        "openapi": "3.1.0",
        "info": {"title": "authwire query API", "version": __version__,
                 "description": "Read-only: enriched records, connections, counters, alerts, per-address "
                                "inspection. Unknown parameters are errors. Bodies use the proto3 JSON mapping "
                                "with proto field names."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "the token in --token-file"},
                "session": {"type": "apiKey", "in": "cookie", "name": "authwire_session",
                            "description": "the web view's session, from a one-time login link"},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
    }
