"""`authwire block list|add IP [--ttl 10m] [--reason TEXT]|remove IP`: the running sidecar's block list."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Callable
from typing import TextIO

import grpc
from google.protobuf import json_format

from authwire import config as config_mod
from authwire.v1 import block_pb2, block_pb2_grpc


def add_parser(sub: argparse._SubParsersAction, add_server: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("block", help="the kernel block list: list, add or remove source IPs (new SYNs dropped "
                                     "with serve --enforce, else only counted)")
    actions = p.add_subparsers(dest="block_action", required=True, metavar="ACTION")
    a = actions.add_parser("list", help="entries with their expiry, reason and drop counts")
    a.add_argument("--format", choices=("table", "json"), default="table")
    add_server(a)
    a = actions.add_parser("add", help="block a source IP (IPv4 or IPv6) for --ttl")
    a.add_argument("ip")
    a.add_argument("--ttl", default="10m", help="how long, e.g. 30s, 10m, 2h (default 10m; at most 30d)")
    a.add_argument("--reason", default="", help="why (stored with the entry, at most 200 characters)")
    add_server(a)
    a = actions.add_parser("remove", help="unblock a source IP")
    a.add_argument("ip")
    add_server(a)
    p.set_defaults(handler=run)


def _stub(server: str) -> block_pb2_grpc.BlockStub:
    return block_pb2_grpc.BlockStub(grpc.insecure_channel(server))


def _when(entry: block_pb2.BlockedAddress) -> str:
    return dt.datetime.fromtimestamp(entry.expires.ToNanoseconds() / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(args: argparse.Namespace, out: TextIO) -> int:
    stub = _stub(args.server)
    if args.block_action == "list":
        response = stub.List(block_pb2.ListBlockedRequest(), timeout=30)
        if args.format == "json":
            for entry in response.entries:
                out.write(json.dumps(json_format.MessageToDict(entry, preserving_proto_field_name=True,
                                                               always_print_fields_with_no_presence=True)) + "\n")
            return 0
        out.write(f"mode: {'enforce (dropping)' if response.enforce else 'dry run (counting only)'}\n")
        out.write(f"{'IP':<40} {'EXPIRES':<21} {'DROPPED':>8} {'WOULD_DROP':>10}  REASON\n")
        for e in response.entries:
            out.write(f"{e.ip:<40} {_when(e):<21} {e.dropped:>8} {e.would_drop:>10}  {e.reason}\n")
        return 0
    if args.block_action == "add":
        ttl = config_mod.parse_duration(args.ttl)
        request = block_pb2.AddBlockRequest(ip=args.ip, reason=args.reason)
        request.ttl.FromNanoseconds(int(ttl * 1e9))
        response = stub.Add(request, timeout=30)
        if not response.added:
            out.write(f"not blocked: {response.refused}\n")
            return 1
        mode = "new SYNs are dropped" if response.enforce else "dry run: new SYNs are counted, not dropped"
        out.write(f"blocked {response.entry.ip} until {_when(response.entry)} ({mode})\n")
        return 0
    response = stub.Remove(block_pb2.RemoveBlockRequest(ip=args.ip), timeout=30)
    out.write("removed\n" if response.removed else "not in the block list\n")
    return 0 if response.removed else 1
