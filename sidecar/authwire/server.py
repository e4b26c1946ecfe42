"""`authwire serve`: the sidecar process. Wires the one data path together and runs it until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from authwire import access
from authwire.config import Config, ConfigError, parse_duration, token_path
from authwire.counters import Counters
from authwire.detect import settings as detect_settings
from authwire.detect.engine import DetectionEngine, alerts_jsonl_path
from authwire.detect.query_service import AlertQueries
from authwire.ingest import envoy_als
from authwire.ingest import grpc_service as ingest_service
from authwire.join.joiner import Joiner
from authwire.kernel import block_service
from authwire.listen import ListenerLock, claim, set_socket_access
from authwire.pipeline import Pipeline, tune_gc
from authwire.query.grpc_service import QueryService
from authwire.store.alerts import AlertStore, alerts_path
from authwire.store.jsonl import JsonlSink
from authwire.store.record_store import Store
from authwire.v1 import ingest_pb2, query_pb2, query_pb2_grpc

log = logging.getLogger("authwire")

RETENTION_EVERY_SECONDS = 60
SHUTDOWN_GRACE_SECONDS = 5


def bind(server: grpc.aio.Server, address: str, tls: access.ServerTls | None = None) -> None:
    """unix:/path (claimed first: authwire.listen) or HOST:PORT (TLS when tls is enabled); raises OSError
    naming the address."""
    try:
        if tls is not None and tls.enabled and not address.startswith("unix:"):
            bound = server.add_secure_port(address, tls.grpc_credentials())
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError:  # grpc >= 1.5x raises instead of returning 0
        bound = 0
    if bound == 0 and not address.startswith("unix:"):
        raise OSError(errno.EADDRINUSE, f"listen {address}: cannot listen (in use by another process, "
                                        "or not a local address?)")


def load_tls(config: Config) -> access.ServerTls:
    try:
        return access.ServerTls(config.tls_cert, config.tls_key, config.tls_client_ca)
    except access.AccessError as exc:
        raise ConfigError(str(exc)) from None


def load_access(config: Config, tls: access.ServerTls | None = None) -> access.BearerToken | None:
    """The bearer token, or None with token_file = "off" — then every TCP listener that accepts reports or
    serves records is refused, named (unless mutual TLS authenticates gRPC and gRPC-Web peers: then only
    HTTP on TCP is refused), and serve listens on unix sockets only."""
    if config.token_file.strip().lower() == access.TOKEN_OFF:
        mtls = tls is not None and tls.mutual
        tcp = [f"{setting} {a}" for setting in ("listen", "grpc_web_listen", "http_listen")
               for a in getattr(config, setting)
               if not a.startswith("unix:") and not (mtls and setting != "http_listen")]
        if tcp:
            raise ConfigError(f"token_file = off, but these TCP listeners would let any local user read or "
                              f"forge records: {', '.join(tcp)}; give them a token file or use unix sockets")
        return None
    try:
        return access.load_or_create_token(token_path(config))
    except access.AccessError as exc:
        raise ConfigError(f"token_file: {exc}") from None


def claim_listeners(config: Config) -> list[ListenerLock]:
    """Claim every unix socket path before anything else starts, so a second sidecar stops here, naming
    the address, without touching the running one's sockets (TCP: the bind itself refuses)."""
    return [claim(a, setting) for setting in ("listen", "grpc_web_listen", "http_listen")
            for a in getattr(config, setting)]


def grpc_options(config: Config) -> list[tuple[str, int]]:
    return [
        ("grpc.so_reuseport", 0),  # a second sidecar on the same port must fail to bind, not share it
        ("grpc.max_receive_message_length", config.grpc_max_message_bytes),
        ("grpc.max_concurrent_streams", config.grpc_max_streams_per_connection),
        ("grpc.max_connection_idle_ms", int(config.grpc_idle_timeout * 1000)),
        ("grpc.http2.max_ping_strikes", 2),  # ping floods close the connection
    ]


def remove_unix_sockets(addresses: list[str]) -> None:
    """grpc leaves a unix socket's file behind when it stops: remove it, so nothing stale remains."""
    for address in addresses:
        if address.startswith("unix:"):
            with contextlib.suppress(FileNotFoundError):
                Path(address[len("unix:"):]).unlink()


def start_inspector(config: Config, counters: Counters):
    """The kernel inspector, or (None, why) when it cannot run here; serve goes on without it."""
    if config.no_inspector:
        return None, "disabled by --no-inspector"
    try:
        from authwire.kernel import InspectorUnavailable
        from authwire.kernel import start_inspector as start
    except ImportError as exc:
        return None, f"kernel inspector not importable: {exc}"
    try:
        return start(config, counters), "running"
    except InspectorUnavailable as exc:
        log.warning("kernel inspector off: %s. Fix: %s (see `authwire doctor`)", exc.reason, exc.fix)
        return None, f"{exc.reason}; fix: {exc.fix}"


async def serve(config: Config) -> None:
    # Every part started registers its own cleanup, so a failure half-way through start-up (a port in use,
    # say) still detaches the kernel programs and flushes what was accepted, like SIGTERM does.
    async with contextlib.AsyncExitStack() as running:
        await _run(config, running)


async def _run(config: Config, running: contextlib.AsyncExitStack) -> None:
    running.callback(log.info, "authwire stopped")  # cleanups run last-in first-out: this line comes last
    tls = load_tls(config)
    token = load_access(config, tls)
    claims = claim_listeners(config)
    running.callback(lambda: [c.release() for c in claims])
    counters = Counters()
    store = Store(config.db, group=config.data_group or None)
    running.callback(store.close)
    # In a worker thread: pyroute2's synchronous API (tc attach) runs its own event loop, which fails
    # inside this running one ("This event loop is already running").
    inspector, inspector_status = await asyncio.to_thread(start_inspector, config, counters)
    if inspector is not None:
        running.push_async_callback(asyncio.to_thread, inspector.stop)  # tc detach: pyroute2 again
    table = inspector.table if inspector is not None else None
    jsonl = (JsonlSink(config.jsonl, config.jsonl_max_bytes, config.jsonl_keep, counters,
                       group=config.data_group or None) if config.jsonl else None)
    # OTLP export: started before the detections and the pipeline, so closed after both (LIFO) with their
    # last records and alerts.
    exporter = await _start_exporter(config, counters) if config.otlp_endpoint else None
    if exporter is not None:
        running.push_async_callback(exporter.close)
    # Detections (issue 12): after the ack, in their own task; closed after the pipeline (LIFO) so they see
    # its last batches.
    alert_store = AlertStore(alerts_path(config.db))
    running.callback(alert_store.close)
    settings = detect_settings.from_config(config)
    # The engine runs with every detection off too: it keeps the alert store's retention.
    detector = DetectionEngine(settings, alert_store, counters,
                               alerts_jsonl_path(config.jsonl) if config.jsonl and settings.enabled else None,
                               config.jsonl_max_bytes, config.jsonl_keep, inspector,
                               parse_duration(config.retention_age))
    detector.start()
    running.push_async_callback(detector.close)
    pipeline = Pipeline(store, Joiner(table, config.join_wait, counters), counters, jsonl)
    if settings.enabled:
        pipeline.subscribe_rows(detector.submit, name="detect")
    if exporter is not None:
        exporter.subscribe(pipeline, detector)
    tune_gc()  # after start-up: what exists now is frozen out of the collector's scans
    pipeline.start()
    running.push_async_callback(pipeline.close)

    server = grpc.aio.server(options=grpc_options(config), maximum_concurrent_rpcs=config.grpc_max_concurrent_rpcs,
                             interceptors=[access.GrpcAccess(token, counters, mutual_tls=tls.mutual)])
    running.callback(remove_unix_sockets, config.listen)  # LIFO: runs after server.stop, below
    running.push_async_callback(server.stop, SHUTDOWN_GRACE_SECONDS)
    ingest_service.add_to_server(server, pipeline, counters)
    query_service = QueryService(store, pipeline, counters, inspector, inspector_status,
                                 AlertQueries(alert_store, detector))
    query_pb2_grpc.add_QueryServicer_to_server(query_service, server)
    service_names = [ingest_pb2.DESCRIPTOR.services_by_name["Ingest"].full_name,
                     query_pb2.DESCRIPTOR.services_by_name["Query"].full_name]
    envoy_als.add_to_server(server, pipeline, config, counters)
    service_names.append(envoy_als.SERVICE_NAME)
    block_service.add_to_server(server, inspector, inspector_status, counters)  # the kernel block list
    service_names.append(block_service.SERVICE_NAME)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    for address in config.listen:
        bind(server, address, tls)
    await server.start()
    for address in config.listen:
        if address.startswith("unix:"):
            set_socket_access(address[len("unix:"):], 0o660, config.socket_group)

    if config.grpc_web_listen:
        from authwire.ingest.grpc_web import GrpcWebLimits, start_grpc_web
        grpc_web = await start_grpc_web(config.grpc_web_listen, pipeline, counters, token, GrpcWebLimits(
            max_body=config.grpc_web_max_body_bytes, max_connections=config.grpc_web_max_connections,
            max_in_flight=config.grpc_web_max_in_flight, header_timeout=config.grpc_web_header_timeout,
            body_timeout=config.grpc_web_body_timeout, shutdown_grace=SHUTDOWN_GRACE_SECONDS),
            socket_group=config.socket_group, tls=tls)
        running.push_async_callback(grpc_web.cleanup)

    if config.http_listen:
        from authwire.http_listener import HttpListener
        http = HttpListener(config.http_listen, token)
        # Stages add their routes here (export: /metrics; query: the JSON API and the web view).
        from authwire.export import metrics
        metrics.register(http, counters, store, inspector, inspector_status, pipeline,
                         gauges=[metrics.gauge("authwire_alert_store_alerts", "Alerts in the alert store",
                                               alert_store.count),
                                 *([exporter.gauges] if exporter is not None else [])])
        from authwire.query import http_api
        http_api.register(http, store, counters, inspector=inspector, inspector_status=inspector_status,
                          alerts=alert_store, stats=lambda: query_service.Stats(query_pb2.StatsRequest(), None))
        await http.start()
        running.push_async_callback(http.stop)
        http_api.announce(http)

    for name in ["", *service_names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("authwire serving gRPC on %s%s%s; store %s; token file %s; inspector: %s", ", ".join(config.listen),
             f", gRPC-Web on {', '.join(config.grpc_web_listen)}" if config.grpc_web_listen else "",
             f", HTTP on {', '.join(config.http_listen)}" if config.http_listen else "",
             config.db, token.path if token else "off (unix sockets only)", inspector_status)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if jsonl is not None:  # logrotate's postrotate: reopen the JSONL path
        loop.add_signal_handler(signal.SIGHUP, jsonl.request_reopen)
    retention = loop.create_task(_retention_loop(store, config, counters))
    running.callback(retention.cancel)
    await stop.wait()
    log.info("authwire stopping: finishing in-flight reports")


async def _start_exporter(config: Config, counters: Counters):
    """The OTLP exporter; its modules are imported only when export is on (they need opentelemetry-proto)."""
    from authwire.export.otlp_settings import OtlpSettingError
    try:
        from authwire.export import otlp
        return await otlp.start(config, counters)
    except (OtlpSettingError, ImportError) as exc:
        raise ConfigError(f"otlp_endpoint {config.otlp_endpoint}: {exc}" if isinstance(exc, ImportError)
                          else str(exc)) from None


async def _retention_loop(store: Store, config: Config, counters: Counters) -> None:
    max_age = parse_duration(config.retention_age)
    if max_age <= 0 and config.retention_bytes <= 0:
        return
    while True:
        try:
            deleted = await asyncio.to_thread(store.apply_retention, max_age, config.retention_bytes)
            if deleted:
                counters.inc("store.retention_deleted", n=deleted)
        except Exception as exc:  # retention must never stop ingest
            log.error("retention failed: %s", exc)
            counters.inc("store.retention_failed")
        await asyncio.sleep(RETENTION_EVERY_SECONDS)
