"""The `authwire` command: serve, and the client commands people query with."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

import grpc
from google.protobuf import json_format

from authwire import access
from authwire import config as config_mod
from authwire.access import AccessError
from authwire.query import filters, render
from authwire.store.record_store import QueryError, Store, StoreFormatError
from authwire.v1 import (
    auth_event_pb2,
    ingest_pb2,
    ingest_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
)

INGEST_BATCH = 1000


class CliError(Exception):
    """A user-facing error: printed as `authwire: <message>`, exit status 2."""


def filters_from_args(args: argparse.Namespace, now: float | None = None) -> query_pb2.Filters:
    """The filter flags given -> Filters, through the one parser the HTTP API uses too."""
    values = {spec.name: filters.cli_spelling(spec.name, str(getattr(args, spec.name)))
              for spec in filters.FILTERS if getattr(args, spec.name, None) is not None}
    try:
        return filters.parse_filters(values, now)
    except filters.FilterError as exc:
        raise CliError(f"--{exc.parameter.replace('_', '-')}: {exc.reason}") from None


def _add_filters(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("filters (all given must match)")
    for spec in filters.FILTERS:
        g.add_argument(spec.flag, dest=spec.name, metavar=spec.metavar, help=spec.help)


def _add_server(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=os.environ.get("AUTHWIRE_SERVER", config_mod.DEFAULT_SERVER),
                   help="sidecar gRPC address, unix:/path or HOST:PORT (env AUTHWIRE_SERVER; default "
                        f"{config_mod.DEFAULT_SERVER})")
    p.add_argument("--token-file", default=None,
                   help="bearer token file the sidecar requires on TCP (env AUTHWIRE_TOKEN_FILE; default "
                        f"{access.DEFAULT_TOKEN_FILE} when readable); not read for a unix: server")
    p.add_argument("--tls-ca", default=None, help="TLS to a TCP server: CA file verifying it (env AUTHWIRE_TLS_CA)")
    p.add_argument("--tls-cert", default=None, help="mTLS: client certificate (env AUTHWIRE_TLS_CERT)")
    p.add_argument("--tls-key", default=None, help="mTLS: client key (env AUTHWIRE_TLS_KEY)")


def _add_format(p: argparse.ArgumentParser, choices=render.FORMATS) -> None:
    p.add_argument("--format", choices=choices, default="table")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authwire", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the sidecar (gRPC ingest + query, kernel inspector, store)")
    config_mod.add_arguments(p)

    p = sub.add_parser("ingest", help="send AuthEvents (JSON lines, proto3 JSON mapping) to the sidecar")
    p.add_argument("file", help="file of JSON lines, or - for stdin")
    _add_server(p)

    p = sub.add_parser("query", help="enriched records, newest first (or --group-by counts)")
    _add_filters(p)
    _add_format(p)
    p.add_argument("--limit", default=str(filters.DEFAULT_LIMIT), help="records (or groups) to show, 1..10000")
    p.add_argument("--group-by", metavar="FIELD[,FIELD]",
                   help="count records per value, e.g. client_ip,auth.outcome or syn.signature")
    p.add_argument("--db", help="read this store file directly (read-only) instead of asking the sidecar")
    _add_server(p)

    p = sub.add_parser("tail", help="the latest records; -f keeps following new ones")
    _add_filters(p)
    _add_format(p)
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--lines", type=int, default=10, help="recent records to show first")
    _add_server(p)

    p = sub.add_parser("stats", help="counters: received, accepted, rejected by reason, dropped, kernel")
    _add_format(p, ("table", "json"))
    _add_server(p)

    p = sub.add_parser("connections", help="the kernel's tracked TCP connections and their facts")
    _add_format(p, ("table", "json"))
    p.add_argument("--all", action="store_true", help="include recently closed connections")
    p.add_argument("--client-ip")
    _add_server(p)

    p = sub.add_parser("web", help="browse a store file in the web view (read-only; prints a login link)")
    p.add_argument("--db", required=True, help="the store file (e.g. demo-output/authwire.db)")
    p.add_argument("--http-listen", action="append", metavar="ADDR",
                   help="HOST:PORT or unix:/path (repeatable; default 127.0.0.1:0 = any free port)")
    p.add_argument("--token-file", default="", help="bearer token file (default: 'token' beside --db)")

    p = sub.add_parser("web-url", help="a new one-time login link for the web view of a running sidecar")
    p.add_argument("--token-file", default=os.environ.get("AUTHWIRE_TOKEN_FILE", ""),
                   help="the sidecar's token file (env AUTHWIRE_TOKEN_FILE; default: 'token' beside --db)")
    p.add_argument("--db", default=config_mod.Config.db, help="the sidecar's store (to find its token file)")
    p.add_argument("--url", default="http://127.0.0.1:9182/", help="where the web view listens")

    p = sub.add_parser("doctor", help="check this host for the kernel inspector; print fixes")
    p.add_argument("--format", choices=("table", "json"), default="table")

    _add_alerts_parser(sub)

    sub.add_parser("demo", help="end-to-end demo: Envoy + authwire + traffic in network namespaces (make run)",
                   add_help=False)

    # --- `authwire block`: the kernel block list (parser and handler live in authwire.kernel.block_cli;
    # main() dispatches to args.handler) ---
    from authwire.kernel import block_cli
    block_cli.add_parser(sub, _add_server)
    return parser


def _channel(server: str) -> grpc.Channel:
    """Sends the bearer token on TCP (--token-file / AUTHWIRE_TOKEN_FILE; see authwire.access)."""
    return access.client_channel(server, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])


def _read_events(path: str) -> Iterator[tuple[int, auth_event_pb2.AuthEvent | None, str]]:
    """(line number, event or None, parse error) for each non-blank line."""
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    with stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                yield number, json_format.Parse(line, auth_event_pb2.AuthEvent()), ""
            except json_format.ParseError as exc:
                yield number, None, str(exc)


def cmd_ingest(args: argparse.Namespace, out: TextIO) -> int:
    stub = ingest_pb2_grpc.IngestStub(_channel(args.server))
    accepted = rejected = 0

    def send(batch: list[tuple[int, auth_event_pb2.AuthEvent]]) -> None:
        nonlocal accepted, rejected
        response = stub.Report(ingest_pb2.ReportRequest(events=[e for _, e in batch]), timeout=60)
        accepted += response.accepted
        bad = {}
        for r in response.rejections:
            bad.setdefault(r.index, []).append(f"{r.field}: {r.reason}")
        for index, reasons in sorted(bad.items()):
            out.write(f"rejected line {batch[index][0]}: {'; '.join(reasons)}\n")
        rejected += len(bad)

    batch: list[tuple[int, auth_event_pb2.AuthEvent]] = []
    for number, event, error in _read_events(args.file):
        if event is None:
            out.write(f"rejected line {number}: not an AuthEvent in proto3 JSON: {error}\n")
            rejected += 1
            continue
        batch.append((number, event))
        if len(batch) >= INGEST_BATCH:
            send(batch)
            batch = []
    if batch:
        send(batch)
    out.write(f"accepted {accepted}, rejected {rejected}\n")
    return 1 if rejected else 0


def cmd_query(args: argparse.Namespace, out: TextIO) -> int:
    try:
        limit = filters.parse_limit(args.limit)
        group_by = filters.parse_group_by(args.group_by) if args.group_by else []
    except filters.FilterError as exc:
        raise CliError(f"--{exc.parameter.replace('_', '-')}: {exc.reason}") from None
    request = query_pb2.QueryRequest(filters=filters_from_args(args), limit=limit, group_by=group_by)
    if args.db:
        try:
            result = Store(args.db, read_only=True).query(request.filters, request.limit, "", group_by)
        except (QueryError, FileNotFoundError) as exc:
            raise CliError(str(exc)) from None
        except sqlite3.Error as exc:  # e.g. a store in a directory this user cannot write (WAL needs -shm)
            raise CliError(f"--db {args.db}: cannot read the store: {exc}") from None
        records, groups = result.records, result.groups
    else:
        response = query_pb2_grpc.QueryStub(_channel(args.server)).Query(request, timeout=60)
        records, groups = response.records, response.groups
    if group_by:
        render.groups(group_by, groups, args.format, out)
    else:
        render.records(records, args.format, out)
    return 0


def cmd_tail(args: argparse.Namespace, out: TextIO) -> int:
    stub = query_pb2_grpc.QueryStub(_channel(args.server))
    filters = filters_from_args(args)
    if not args.follow:
        recent = stub.Query(query_pb2.QueryRequest(filters=filters, limit=args.lines), timeout=60).records
        render.records(list(reversed(recent)), args.format, out)
        return 0
    # One Tail call returns the backlog and then new records, with no gap and no repeat between them.
    stream = stub.Tail(query_pb2.TailRequest(filters=filters, backlog=args.lines))
    return _follow(stream, lambda items, first: render.records(items, args.format, out, header=first))


def _follow(stream, show: Callable[[list, bool], None]) -> int:
    """Print a server stream (Tail, TailAlerts) item by item until it ends or ^C; header on the first only."""
    first = True
    try:
        for item in stream:
            show([item], first)
            first = False
    except KeyboardInterrupt:
        stream.cancel()
    return 0


def cmd_stats(args: argparse.Namespace, out: TextIO) -> int:
    response = query_pb2_grpc.QueryStub(_channel(args.server)).Stats(query_pb2.StatsRequest(), timeout=30)
    render.stats(response, args.format, out)
    return 0


def cmd_connections(args: argparse.Namespace, out: TextIO) -> int:
    request = query_pb2.ConnectionsRequest(include_closed=args.all, client_ip=args.client_ip or "")
    response = query_pb2_grpc.QueryStub(_channel(args.server)).Connections(request, timeout=30)
    render.connections(response.connections, args.format, out)
    return 0


# --- alerts (detections, issue 12) -------------------------------------------------------------------
def _add_alerts_parser(sub) -> None:
    p = sub.add_parser("alerts", help="alerts the detections raised, newest first; -f follows new and updated ones")
    p.add_argument("--since", help="last matched at or after: 15m, 2h, 7d (ago) or an ISO time")
    p.add_argument("--until", help="first matched at or before: 5m (ago) or an ISO time")
    p.add_argument("--detection", action="append", metavar="NAME[,NAME]",
                   help="stack_stuffing, credential_replay, ua_stack_mismatch, keepalive_stuffing (repeatable)")
    p.add_argument("--severity", help="at least this severity: info, warning, critical")
    p.add_argument("--client-ip", help="alerts naming this client IP")
    p.add_argument("--key", help="exact alert key, e.g. conn=C1f2...")
    p.add_argument("--id", help="one alert by id")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new and updated alerts")
    p.add_argument("-n", "--lines", type=int, default=10, help="with -f: recent alerts to show first")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--db", help="read the alerts beside this record store file directly (read-only)")
    _add_format(p)
    _add_server(p)


def alert_filters_from_args(args: argparse.Namespace, now: float | None = None) -> query_pb2.AlertFilters:
    """The alert filter flags given -> AlertFilters, through the parser GET /v1/alerts uses too."""
    values = {name: filters.cli_spelling(name, ",".join(value) if isinstance(value, list) else str(value))
              for name in filters.ALERT_BY_NAME if (value := getattr(args, name, None))}
    try:
        return filters.parse_alert_filters(values, now)
    except filters.FilterError as exc:
        raise CliError(f"--{exc.parameter.replace('_', '-')}: {exc.reason}") from None


def cmd_alerts(args: argparse.Namespace, out: TextIO) -> int:
    from authwire.detect import render as alert_render

    filters = alert_filters_from_args(args)
    if args.db:
        from authwire.store.alerts import AlertStore, alerts_path

        if args.follow:
            raise CliError("-f needs the sidecar (--server), not --db")
        try:
            found = AlertStore(alerts_path(args.db), read_only=True).query(filters, args.limit).alerts
        except (QueryError, FileNotFoundError) as exc:
            raise CliError(str(exc)) from None
        alert_render.alerts(found, args.format, out)
        return 0
    stub = query_pb2_grpc.QueryStub(_channel(args.server))
    if not args.follow:
        response = stub.Alerts(query_pb2.AlertsRequest(filters=filters, limit=args.limit), timeout=60)
        alert_render.alerts(response.alerts, args.format, out)
        return 0
    stream = stub.TailAlerts(query_pb2.TailAlertsRequest(filters=filters, backlog=args.lines))
    return _follow(stream, lambda items, first: alert_render.alerts(items, args.format, out, header=first))
# --- end alerts ---------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from authwire.server import serve

    cfg = config_mod.load(args)
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(cfg))
    return 0


def cmd_web(args: argparse.Namespace, out: TextIO) -> int:
    from authwire.query import web_serve

    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(web_serve.run(args.db, args.http_listen or ["127.0.0.1:0"], args.token_file, out))
    except (FileNotFoundError, StoreFormatError, ValueError) as exc:  # no store, an old one, a bad address
        raise CliError(str(exc)) from None
    return 0


def cmd_web_url(args: argparse.Namespace, out: TextIO) -> int:
    from authwire import access
    from authwire.query import web_login, web_serve

    token = access.load_token(args.token_file or web_serve.default_token_file(args.db))
    out.write(web_login.login_url(args.url, token) + "\n")
    return 0


def cmd_doctor(args: argparse.Namespace, out: TextIO) -> int:
    from authwire.kernel import doctor

    checks = doctor.run_checks()
    if args.format == "json":
        out.write(json.dumps([c.__dict__ for c in checks], indent=2) + "\n")
    else:
        doctor.print_report(checks, out)
    return 0 if all(c.ok for c in checks) else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        from authwire.demo import run as demo

        return demo.main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command != "serve":  # every client channel of this run uses them (authwire.access.client_channel)
        for flag, env in (("token_file", "AUTHWIRE_TOKEN_FILE"), ("tls_ca", "AUTHWIRE_TLS_CA"),
                          ("tls_cert", "AUTHWIRE_TLS_CERT"), ("tls_key", "AUTHWIRE_TLS_KEY")):
            if getattr(args, flag, None):
                os.environ[env] = getattr(args, flag)
    out = sys.stdout
    try:
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "doctor":
            return cmd_doctor(args, out)
        handler = getattr(args, "handler", None) or {   # handler: subcommands defined in their own module
            "ingest": cmd_ingest, "query": cmd_query, "tail": cmd_tail, "stats": cmd_stats,
            "connections": cmd_connections, "alerts": cmd_alerts, "web": cmd_web,
            "web-url": cmd_web_url}[args.command]
        return handler(args, out)
    except (CliError, config_mod.ConfigError, AccessError, OSError) as exc:
        print(f"authwire: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        where = getattr(args, "server", "")
        print(f"authwire: {where}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
