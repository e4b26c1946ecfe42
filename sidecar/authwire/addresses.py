"""One spelling of every address and flow: canonical IP text and the Community ID of a TCP 4-tuple.

Validation, the connection table and the join all compare addresses in this form, so a gateway that
reports an IPv4 peer as ::ffff:a.b.c.d still meets the kernel's IPv4 packets.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket

import communityid

# The library logs 8 INFO lines per flow it hashes (its inputs, byte by byte): 1 MB per 2,000 connections
# in the sidecar's log at the default level. Its warnings (bad input) still show.
logging.getLogger("communityid").setLevel(logging.WARNING)
_COMMUNITY_ID = communityid.CommunityID()


@functools.lru_cache(maxsize=65_536)
def normalize_ip(text: str) -> str:
    """Canonical text of an IP; IPv4-mapped IPv6 becomes plain IPv4. Raises ValueError for a non-IP."""
    try:  # fast path: canonical IPv4 (the common case) round-trips through inet_pton unchanged
        if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text)) == text:
            return text
    except OSError:
        pass
    addr = ipaddress.ip_address(text.strip())
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


def community_id(client_ip: str, client_port: int, server_ip: str, server_port: int) -> str:
    """Community ID v1 (seed 0, base64) of a TCP flow, by the `communityid` reference implementation."""
    return _COMMUNITY_ID.calc(communityid.FlowTuple.make_tcp(client_ip, server_ip, client_port, server_port)) or ""
