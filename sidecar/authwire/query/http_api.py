"""The read-only HTTP/JSON API and the web view, on the sidecar's HTTP listener (authwire.http_listener).

    GET /v1/records            every `authwire query` filter as a parameter, + limit, page_token, group_by
    GET /v1/records/{id}       one record by request id (the newest, if a gateway reused the id)
    GET /v1/connections        the kernel's tracked connections (live; else those of the latest stored records)
    GET /v1/stats              counters and store size (what `authwire stats` shows)
    GET /v1/alerts             detections' alerts (when the detection store is present)
    GET /v1/inspect?ip=ADDR    everything known about one client address
    GET /v1/timeline           matching records per time bucket, split by one field (the web view's chart)
    GET /openapi.json          the OpenAPI 3.1 document of all of the above (authwire.query.openapi)
    GET /  /inspect  /static/  the web view (authwire/query/web/, no build step)

Bodies use the proto3 JSON mapping of the CLI (authwire.records.to_dict). Every parameter is checked by
authwire.query.filters against the grammar the OpenAPI document states; unknown or repeated parameters and
bad values are 400 problem+json naming the parameter. Nothing here writes anything.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson
from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp

from authwire.counters import Counters
from authwire.http_listener import problem
from authwire.query import filters as flt
from authwire.query.web_login import COOKIE, LOGIN_TTL, SESSION_TTL, WebSessions
from authwire.records import short_enum, to_dict
from authwire.store.record_store import GROUP_FIELDS, MAX_LIMIT, QueryError, Store
from authwire.v1 import auth_event_pb2, connection_pb2, query_pb2, record_pb2

log = logging.getLogger("authwire")

STORED_CONNECTION_RECORDS = 1000  # without an inspector, /v1/connections lists those of this many records
INSPECT_RECORDS = 500     # recent records of an address read to list its connections
INSPECT_CONNECTIONS = 50  # connections listed on an inspect page
INSPECT_GROUPS = 50       # rows per breakdown (routes, credentials, stacks)
QUERY_THREADS = 2          # store reads in parallel (SQLite readers; the machine may have 2 cores)
QUERY_QUEUE = 30           # more requests in progress than threads + this: 429
TIMELINE_MAX_BUCKETS = 120
TIMELINE_DEFAULT_BUCKETS = 30
TIMELINE_DEFAULT_SPAN_S = 24 * 3600   # without `since`: at most this long before the newest matching record
TIMELINE_TOP = 12                     # values per bucket (the rest is summed as "other")
NICE_BUCKETS_S = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600,
                  7200, 10800, 21600, 43200, 86400, 172800, 604800]

JSON = "application/json"
# The web view loads only its own files; no inline script or style, no framing, no form posts elsewhere.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "Cache-Control": "no-store"}

# --- parameters -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """A non-filter parameter: its JSON Schema (for the document) and its parser (text -> value)."""
    name: str
    help: str
    schema: dict[str, Any]
    parse: Callable[[str], Any]
    required: bool = False


def _page_token(text: str) -> str:
    flt.check_pattern("page_token", PAGE_TOKEN_PATTERN, text, "a next_page_token this server returned")
    return text


def _boolean(name: str) -> Callable[[str], bool]:
    def parse(text: str) -> bool:
        if text not in ("true", "false"):
            raise flt.FilterError(name, f"{flt.shown(text)} is not true or false")
        return text == "true"
    return parse


def _ip(name: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        flt.check_pattern(name, flt.IP_PATTERN, text, "an IP address (10.0.0.7, 2001:db8::7)")
        return str(ipaddress.ip_address(text))
    return parse


PAGE_TOKEN_PATTERN = r"^[A-Za-z0-9_-]{1,128}={0,2}$"
LIMIT = Param("limit", "records (or groups) per page", flt.LIMIT_SCHEMA, flt.parse_limit)
PAGE_TOKEN = Param("page_token", "next_page_token of the previous page",
                   {"type": "string", "pattern": PAGE_TOKEN_PATTERN}, _page_token)
GROUP_BY = Param("group_by", f"count records per value of these fields (comma-separated, at most "
                             f"{flt.MAX_GROUP_FIELDS}): {', '.join(GROUP_FIELDS)}",
                 {"type": "string", "pattern": flt.GROUP_BY_PATTERN}, flt.parse_group_by)
CONN_IP = Param("client_ip", "only connections from this client IP",
                {"type": "string", "pattern": flt.IP_PATTERN}, _ip("client_ip"))
INCLUDE_CLOSED = Param("include_closed", "also connections closed within the grace period",
                       {"type": "boolean", "default": False}, _boolean("include_closed"))
INSPECT_IP = Param("ip", "the client address", {"type": "string", "pattern": flt.IP_PATTERN}, _ip("ip"),
                   required=True)
SPLIT_FIELDS = [n for n in GROUP_FIELDS if n not in ("http.path", "community_id")]
SPLIT_BY = Param("split_by", "the field each bucket is split by", {"type": "string", "enum": SPLIT_FIELDS,
                                                                    "default": "auth.reason"},
                 lambda text: flt.parse_choice("split_by", text, SPLIT_FIELDS))
BUCKETS = Param("buckets", "at most this many time buckets (widths rounded up to 10ms, ..., 1s, 5s, 1m, ...)",
                {"type": "integer", "minimum": 2, "maximum": TIMELINE_MAX_BUCKETS,
                 "default": TIMELINE_DEFAULT_BUCKETS},
                lambda text: flt.parse_int("buckets", text, 2, TIMELINE_MAX_BUCKETS))


@dataclass(frozen=True)
class Operation:
    """One API route, as the server runs it and as /openapi.json documents it (the single source of both)."""
    path: str
    summary: str
    response: str              # component schema name of the 200 body
    filters: str = ""          # "records": takes every record filter; "alerts": every alert filter
    params: tuple[Param, ...] = ()
    path_params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = (400, 401)
    handler: str = ""


OPERATIONS = [
    Operation("/v1/records", "Enriched records, newest first; or counts per value with group_by",
              "authwire.v1.QueryResponse", "records", (LIMIT, PAGE_TOKEN, GROUP_BY), errors=(400, 401, 404),
              handler="records"),
    Operation("/v1/records/{request_id}", "One record by request id", "authwire.v1.EnrichedRecord",
              path_params=(Param("request_id", "the gateway's request id",
                                 {"type": "string", "minLength": 1, "maxLength": flt.MAX_TEXT},
                                 lambda text: flt.parse_text("request_id", text)),),
              errors=(400, 401, 404), handler="record"),
    Operation("/v1/connections", "The kernel inspector's tracked TCP connections (without a running inspector: "
              "those of the most recent stored records, as of their join)",
              "authwire.v1.ConnectionsResponse", params=(CONN_IP, INCLUDE_CLOSED),
              handler="connections"),
    Operation("/v1/stats", "Counters and store size", "authwire.v1.StatsResponse", handler="stats"),
    Operation("/v1/inspect", "Everything authwire knows about one client address", "Inspect",
              params=(INSPECT_IP, flt.BY_NAME["since"], flt.BY_NAME["until"]), handler="inspect"),
    Operation("/v1/alerts", "Alerts the detections raised, newest (last matched) first",
              "authwire.v1.AlertsResponse", "alerts", (LIMIT, PAGE_TOKEN), errors=(400, 401, 404), handler="alerts"),
    Operation("/v1/timeline", "Matching records per time bucket, split by one field", "Timeline", "records",
              (SPLIT_BY, BUCKETS), handler="timeline"),
]


LOGIN = Param("login", "a one-time login value (from the link `authwire serve` / `authwire web` / `authwire web-url` "
                       "print): exchanged for a session cookie, then a redirect to /",
              {"type": "string", "minLength": 1, "maxLength": 200}, lambda text: _login_text(text))


def _login_text(text: str) -> str:
    if not 1 <= len(text) <= 200:
        raise flt.FilterError("login", "empty" if not text else "longer than 200 characters")
    return text
# The web view's pages: parameters checked like the API's (the dashboard keeps its filters in the address bar).
PAGES = [
    Operation("/", "The web view: records, failures over time, top failing stacks/IPs/credentials, alerts",
              "html", "records", (LOGIN,), handler="page"),
    Operation("/inspect", "The web view of one client address", "html", params=(INSPECT_IP,), handler="page"),
]
STATIC = Operation("/static/{name}", "The web view's script, stylesheet and icon", "asset", handler="asset")


class BadParams(Exception):
    def __init__(self, errors: list[flt.FilterError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def _bad(errors: list[flt.FilterError]) -> web.Response:
    names = ", ".join(dict.fromkeys(e.parameter for e in errors))
    return problem(400, "Bad Request", "; ".join(str(e) for e in errors[:5]) or f"bad parameter {names}",
                   invalid_params=[{"name": e.parameter, "reason": e.reason} for e in errors[:20]])


FILTER_SETS = {"records": (flt.BY_NAME, flt.parse_filters, query_pb2.Filters),
               "alerts": (flt.ALERT_BY_NAME, flt.parse_alert_filters, query_pb2.AlertFilters)}


def parse_params(request: web.Request, op: Operation, now: float) -> tuple[Any, dict[str, Any]]:
    """Every parameter of the request checked against op: (filters, other values). Raises BadParams naming
    each unknown, repeated or bad one."""
    specs, parse_filters, message = FILTER_SETS[op.filters or "records"]
    known: dict[str, Param | flt.FilterSpec] = {p.name: p for p in op.params}
    if op.filters:
        known.update(specs)
    errors: list[flt.FilterError] = []
    filter_text: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name in dict.fromkeys(request.query.keys()):
        shown_name = name if len(name) <= 40 and name.isprintable() else flt.shown(name)
        if name not in known:
            errors.append(flt.FilterError(shown_name, "unknown parameter"))
            continue
        texts = request.query.getall(name)
        if len(texts) > 1:
            errors.append(flt.FilterError(name, "given more than once"))
            continue
        spec = known[name]
        if isinstance(spec, flt.FilterSpec):
            filter_text[name] = texts[0]
            continue
        try:
            values[name] = spec.parse(texts[0])
        except flt.FilterError as exc:
            errors.append(exc)
    for spec in op.params:
        if getattr(spec, "required", False) and spec.name not in request.query:
            errors.append(flt.FilterError(spec.name, "required"))
    filters = message()
    for name, text in filter_text.items():  # one at a time, so that every bad one is named
        try:
            filters.MergeFrom(parse_filters({name: text}, now))
        except flt.FilterError as exc:
            errors.append(exc)
    if errors:
        raise BadParams(errors)
    return filters, values


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON, headers=SECURITY_HEADERS)


def _ts(ns: int) -> str:
    t = Timestamp()
    t.FromNanoseconds(ns)
    return t.ToJsonString()


def _ns(ts) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos


@dataclass
class QueryApi:
    store: Store
    counters: Counters
    inspector: Any = None
    inspector_status: str = ""
    alerts: Any = None                   # authwire.store.alerts.AlertStore, when detections are on
    stats: Callable[[], Awaitable[query_pb2.StatsResponse]] | None = None
    sessions: WebSessions | None = None
    started: float = field(default_factory=time.time)
    # Store reads run on the API's own threads, so slow queries never hold the threads the rest of the
    # sidecar uses (asyncio.to_thread: detections, metrics); beyond QUERY_THREADS + QUERY_QUEUE requests
    # in progress, the API answers 429 rather than queueing without bound (counted: http.busy).
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(QUERY_THREADS, thread_name_prefix="authwire-http-query"),
        repr=False)
    _in_progress: int = 0

    async def _run(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kw))

    # --- helpers --------------------------------------------------------------------------------------
    async def _query(self, filters: query_pb2.Filters, limit: int = 0, page_token: str = "",
                     group_by: list[str] | tuple[str, ...] = (), **kw: Any):
        return await self._run(self.store.query, filters, limit, page_token, list(group_by), **kw)

    def route(self, op: Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        method = getattr(self, "op_" + op.handler)

        async def handle(request: web.Request) -> web.StreamResponse:
            if self._in_progress >= QUERY_THREADS + QUERY_QUEUE:
                self.counters.inc("http.busy", op.handler)
                response = problem(429, "Too Many Requests", "the API is busy with other queries; retry shortly")
                response.headers["Retry-After"] = "1"
                return response
            self._in_progress += 1
            try:
                return await self._handle(op, method, request)
            finally:
                self._in_progress -= 1
        return handle

    async def _handle(self, op: Operation, method: Callable[..., Awaitable[web.Response]],
                      request: web.Request) -> web.Response:
        try:
            filters, values = parse_params(request, op, time.time())
            for p in op.path_params:
                values[p.name] = p.parse(request.match_info[p.name])
        except BadParams as exc:
            self.counters.inc("http.bad_request", op.handler)
            return _bad(exc.errors)
        except flt.FilterError as exc:
            self.counters.inc("http.bad_request", op.handler)
            return _bad([exc])
        try:
            return await method(filters, **values)
        except Exception as exc:
            if not isinstance(exc, QueryError):
                self.counters.inc("http.failed", op.handler)
                log.exception("GET %s failed", op.path)
                return problem(500, "Internal Server Error", f"{type(exc).__name__} (see the sidecar's log)")
            # The store names what it refused; parameters were checked already, so this is a page token
            # that is well-formed but not one this store issued (or no longer resolves).
            self.counters.inc("http.bad_request", op.handler)
            parameter = str(exc).split(":", 1)[0]
            if parameter == "page_token":
                return problem(404, "Not Found", "page_token: no such page (not a token this server "
                               "issued)", invalid_params=[{"name": "page_token", "reason": "no such page"}])
            return _bad([flt.FilterError(parameter, str(exc).split(":", 1)[-1].strip())])

    # --- operations -----------------------------------------------------------------------------------
    async def op_records(self, filters: query_pb2.Filters, limit: int = flt.DEFAULT_LIMIT, page_token: str = "",
                         group_by: list[str] | None = None) -> web.Response:
        result = await self._query(filters, limit, page_token, group_by or ())
        return json_response(to_dict(query_pb2.QueryResponse(records=result.records, groups=result.groups,
                                                              next_page_token=result.next_page_token)))

    async def op_record(self, filters: query_pb2.Filters, request_id: str) -> web.Response:
        record = await self._run(self.store.get, request_id)
        if record is None:
            return problem(404, "Not Found", "no record with this request_id")
        return json_response(to_dict(record))

    async def op_connections(self, filters: query_pb2.Filters, client_ip: str = "",
                             include_closed: bool = False) -> web.Response:
        if self.inspector is not None:
            connections = await self._run(self.inspector.table.all, include_closed)
        else:
            connections = await self._run(self._stored_connections, client_ip)
        if client_ip:
            connections = [c for c in connections if _same_ip(c.client.ip, client_ip)]
        return json_response(to_dict(query_pb2.ConnectionsResponse(connections=connections)))

    def _stored_connections(self, client_ip: str) -> list[connection_pb2.Connection]:
        """Without a running inspector: the newest stored connections; of one client, those of its most recent
        records (as of their join)."""
        if not client_ip:
            return self.store.connections(STORED_CONNECTION_RECORDS)
        recent = self.store.query(query_pb2.Filters(client_ip=client_ip), STORED_CONNECTION_RECORDS)
        seen: dict[str, connection_pb2.Connection] = {}
        for record in recent.records:
            if record.connection.uid and record.connection.uid not in seen:
                seen[record.connection.uid] = record.connection
        return list(seen.values())

    async def op_stats(self, filters: query_pb2.Filters) -> web.Response:
        if self.stats is not None:
            response = await self.stats()
        else:
            response = query_pb2.StatsResponse(
                counters=[query_pb2.Counter(name=n, label=label, value=v)
                          for (n, label), v in sorted(self.counters.snapshot().items())],
                store_records=await self._run(self.store.count), store_bytes=self.store.size_bytes(),
                inspector_running=False, inspector_status=self.inspector_status)
            response.started.FromNanoseconds(int(self.started * 1e9))
        return json_response(to_dict(response))

    async def op_inspect(self, filters: query_pb2.Filters, ip: str) -> web.Response:
        base = query_pb2.Filters(client_ip=ip)
        base.MergeFrom(filters)  # since / until
        return json_response(await self._run(self._inspect, ip, base))

    def _inspect(self, ip: str, base: query_pb2.Filters) -> dict[str, Any]:
        store = self.store
        recent = store.query(base, INSPECT_RECORDS)
        first = None
        if recent.next_page_token:  # more records than read: the oldest one is the first recorded
            first = store.query(base, 1, "", (), after_id=0, through_id=store.max_id())

        def groups(*fields: str) -> list[dict[str, Any]]:
            if recent.next_page_token:  # more records than were read: the store counts them all
                found = store.query(base, INSPECT_GROUPS, "", list(fields)).groups
            else:  # every record of the address is in hand: count them here, sparing the store a query each
                found = local_groups(recent.records, fields)
            ordered = sorted(found, key=lambda g: (-g.count, list(g.values)))[:INSPECT_GROUPS]
            return [to_dict(g) for g in ordered]

        outcomes = groups("auth.outcome")
        connections: dict[str, connection_pb2.Connection] = {}
        for record in recent.records:
            uid = record.connection.uid
            if uid and uid not in connections and len(connections) < INSPECT_CONNECTIONS:
                connections[uid] = record.connection
        live = []
        if self.inspector is not None:
            live = [c for c in self.inspector.table.all(True) if _same_ip(c.client.ip, ip)][:INSPECT_CONNECTIONS]
        times = [_ns(r.event.start_time) for r in recent.records]
        if first is not None and first.records:
            times.append(_ns(first.records[0].event.start_time))
        body: dict[str, Any] = {
            "ip": ip,
            "requests": sum(int(g["count"]) for g in outcomes),
            "outcomes": outcomes,
            "reasons": groups("auth.outcome", "auth.reason"),
            "routes": groups("route_id", "auth.outcome"),
            "credentials": groups("credential_id", "auth.method", "auth.outcome"),
            "consumers": groups("consumer", "auth.outcome"),
            "stacks": groups("syn.signature", "syn.os_hint", "syn.hop_distance"),
            "user_agents": [],
            "connections": [to_dict(c) for c in connections.values()],
            "live_connections": [to_dict(c) for c in live],
            "recent": [to_dict(r) for r in recent.records[:20]],
            "alerts": [to_dict(a) for a in self.alerts.query(query_pb2.AlertFilters(client_ip=ip),
                                                              INSPECT_GROUPS).alerts] if self.alerts else [],
        }
        agents: dict[str, int] = {}
        for record in recent.records:
            ua = record.event.http.user_agent
            agents[ua] = agents.get(ua, 0) + 1
        body["user_agents"] = [{"user_agent": ua, "count": n}
                               for ua, n in sorted(agents.items(), key=lambda kv: -kv[1])[:INSPECT_GROUPS]]
        if times:
            body["first_seen"] = _ts(min(times))
            body["last_seen"] = _ts(max(times))
        return body

    async def op_alerts(self, filters: query_pb2.AlertFilters, limit: int = flt.DEFAULT_LIMIT,
                        page_token: str = "") -> web.Response:
        if self.alerts is None:
            return json_response({})
        result = await self._run(self.alerts.query, filters, limit, page_token)
        return json_response(to_dict(query_pb2.AlertsResponse(alerts=result.alerts,
                                                              next_page_token=result.next_page_token)))

    async def op_timeline(self, filters: query_pb2.Filters, split_by: str = "auth.reason",
                          buckets: int = TIMELINE_DEFAULT_BUCKETS) -> web.Response:
        return json_response(await self._run(self._timeline, filters, split_by, buckets))

    def _timeline(self, filters: query_pb2.Filters, split_by: str, buckets: int) -> dict[str, Any]:
        store = self.store
        newest = store.query(filters, 1).records
        body: dict[str, Any] = {"split_by": split_by, "bucket_seconds": 0, "buckets": []}
        if not newest:
            return body
        until = _ns(filters.until) if filters.HasField("until") else _ns(newest[0].event.start_time) + 1
        if filters.HasField("since"):
            since = _ns(filters.since)
        else:
            first = store.query(filters, 1, "", (), after_id=0, through_id=store.max_id()).records
            oldest = min(_ns(first[0].event.start_time), until - 1) if first else until - 1
            since = max(oldest, until - TIMELINE_DEFAULT_SPAN_S * 1_000_000_000)
        span_s = max((until - since) / 1e9, 1e-9)
        width_s = next((w for w in NICE_BUCKETS_S if w * buckets >= span_s), NICE_BUCKETS_S[-1])
        width = int(width_s * 1_000_000_000)
        start = since // width * width
        body["bucket_seconds"] = width_s
        body["since"], body["until"] = _ts(start), _ts(until)
        t = start
        while t < until and len(body["buckets"]) < TIMELINE_MAX_BUCKETS + 1:
            window = query_pb2.Filters()
            window.CopyFrom(filters)
            window.since.FromNanoseconds(max(t, since))
            window.until.FromNanoseconds(min(t + width, until))
            groups = store.query(window, MAX_LIMIT, "", [split_by]).groups
            top = [to_dict(g) for g in groups[:TIMELINE_TOP]]
            rest = sum(g.count for g in groups[TIMELINE_TOP:])
            if rest:
                top.append(to_dict(query_pb2.Group(values=["(other)"], count=rest)))
            body["buckets"].append({"start": _ts(t), "groups": top})
            t += width
        return body


# How a record's value of a group field reads in a Group, as the store writes it (record_store._group_value):
# enums by their short name, missing text as "", hop distance only when the SYN was seen.
_LOCAL_GROUP_VALUE: dict[str, Callable[[record_pb2.EnrichedRecord], str]] = {
    "auth.outcome": lambda r: short_enum(auth_event_pb2.AuthOutcome, r.event.auth.outcome),
    "auth.reason": lambda r: short_enum(auth_event_pb2.FailureReason, r.event.auth.reason),
    "auth.method": lambda r: short_enum(auth_event_pb2.AuthMethod, r.event.auth.method),
    "route_id": lambda r: r.event.route_id,
    "credential_id": lambda r: r.event.auth.credential_id,
    "consumer": lambda r: r.event.auth.consumer,
    "syn.signature": lambda r: r.connection.syn.signature if r.HasField("connection") else "",
    "syn.os_hint": lambda r: r.connection.syn.os_hint if r.HasField("connection") else "",
    "syn.hop_distance": lambda r: (str(r.connection.syn.hop_distance)
                                   if r.HasField("connection") and r.connection.syn.initial_ttl else ""),
}


def local_groups(records: list[record_pb2.EnrichedRecord], fields: tuple[str, ...]) -> list[query_pb2.Group]:
    """What store.query(..., group_by=fields) answers, for records already read (the inspect page's)."""
    counts: dict[tuple[str, ...], int] = {}
    for record in records:
        key = tuple(_LOCAL_GROUP_VALUE[f](record) for f in fields)
        counts[key] = counts.get(key, 0) + 1
    return [query_pb2.Group(values=list(key), count=n) for key, n in counts.items()]


def _same_ip(a: str, b: str) -> bool:
    try:
        x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return False
    x = x.ipv4_mapped or x if isinstance(x, ipaddress.IPv6Address) else x
    y = y.ipv4_mapped or y if isinstance(y, ipaddress.IPv6Address) else y
    return x == y


# --- the web view -----------------------------------------------------------------------------------

WEB_FILES = {"app.js": "text/javascript", "app.css": "text/css", "favicon.svg": "image/svg+xml"}


def _web_file(name: str) -> bytes:
    return resources.files("authwire.query").joinpath("web", name).read_bytes()


class WebView:
    def __init__(self, sessions: WebSessions, allowed: Callable[[web.Request], bool]) -> None:
        self.sessions = sessions
        self.allowed = allowed  # the listener's token/cookie rule
        self.index = _web_file("index.html")
        self.files = {name: (_web_file(name), ctype) for name, ctype in WEB_FILES.items()}

    async def page(self, request: web.Request) -> web.StreamResponse:
        op = next(op for op in PAGES if op.path == request.path)
        try:
            parse_params(request, op, time.time())
        except BadParams as exc:
            return _bad(exc.errors)
        login = request.query.get("login")
        if login is not None:
            session = self.sessions.redeem(login)
            if session is None:
                return _login_needed("This login link is not valid any more (used, expired or mistyped).")
            response = web.HTTPSeeOther("/", headers={**SECURITY_HEADERS})
            response.set_cookie(COOKIE, session, max_age=int(SESSION_TTL), path="/", httponly=True,
                                samesite="Strict", secure=request.secure)
            return response
        if not self.allowed(request):
            return _login_needed("")
        return web.Response(body=self.index, content_type="text/html", charset="utf-8",
                            headers={**SECURITY_HEADERS, "Content-Security-Policy": CSP, "X-Frame-Options": "DENY"})

    async def asset(self, request: web.Request) -> web.StreamResponse:
        entry = self.files.get(request.match_info["name"])
        if entry is None:
            raise web.HTTPNotFound()
        body, ctype = entry
        return web.Response(body=body, content_type=ctype, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


def _login_needed(why: str) -> web.Response:
    text = (f"{why}\n\nThe web view needs a login link. `authwire serve` and `authwire web` print one when "
            "they start; `authwire web-url --token-file PATH` makes a new one (it works once, for 5 minutes). "
            "API clients send Authorization: Bearer <token>.\n").lstrip()
    return web.Response(text=text, status=401, content_type="text/plain",
                        headers={**SECURITY_HEADERS, "WWW-Authenticate": 'Bearer realm="authwire"'})


# --- registration -----------------------------------------------------------------------------------


def register(http: Any, store: Store, counters: Counters, *, inspector: Any = None, inspector_status: str = "",
             alerts: Any = None, stats: Callable[[], Awaitable[query_pb2.StatsResponse]] | None = None
             ) -> QueryApi:
    """Add the JSON API, /openapi.json and the web view to an HttpListener (its token rule applies)."""
    from authwire.query import openapi

    sessions = WebSessions(http.token, counters) if http.token is not None else None
    api = QueryApi(store, counters, inspector, inspector_status, alerts, stats, sessions)
    for op in OPERATIONS:
        http.add_route("GET", op.path, api.route(op))

    async def close(app: web.Application) -> None:
        api._executor.shutdown(wait=False, cancel_futures=True)
    http.app.on_cleanup.append(close)
    document = orjson.dumps(openapi.document())

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type=JSON, headers=SECURITY_HEADERS)

    http.add_route("GET", "/openapi.json", openapi_json, public=True)  # describes, holds no data
    if sessions is not None:
        http.authenticators.append(sessions.authenticate)
        # A login link must reach the page handler, which redeems it (or answers 401) and does nothing else.
        http.authenticators.append(lambda request: request.path == "/" and "login" in request.query)
        view = WebView(sessions, lambda request: http.allowed(request, False))
        # Public like /healthz: the page and its scripts hold no data (they fetch /v1/*, which needs the
        # session); on a non-loopback listener the listener still asks for the token or a session first.
        http.add_route("GET", "/", view.page, public=True)
        http.add_route("GET", "/inspect", view.page, public=True)
        http.add_route("GET", "/static/{name}", view.asset, public=True)
    return api


def view_urls(http: Any) -> list[str]:
    """http://HOST:PORT/ of each TCP address the listener is bound to."""
    urls = []
    for bound in http.bound:
        if isinstance(bound, tuple) and len(bound) >= 2:
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(str(bound[0]), str(bound[0]))  # any -> this host
            host = f"[{host}]" if ":" in host else host
            urls.append(f"http://{host}:{bound[1]}/")
    return urls


def announce(http: Any, out: Callable[[str], None] | None = None) -> str | None:
    """Log (or print, with out) the web view's one-time login link; return it. None when no TCP listener."""
    from authwire.query.web_login import login_url

    urls = view_urls(http)
    if not urls or http.token is None:
        return None
    link = login_url(urls[0], http.token)
    message = (f"web view: {link} (one-time login link, valid {int(LOGIN_TTL // 60)} minutes; "
               f"`authwire web-url --token-file {http.token.path}` makes another)")
    (out or log.info)(message)
    return link
