"""The kernel TCP inspector: eBPF (bcc) on tc clsact + tracepoints, feeding the ConnectionTable.

    inspector = start_inspector(config, counters)   # raises InspectorUnavailable(reason, fix)
    inspector.table.candidates(client_ip, client_port, server_ip, server_port)
    inspector.counters(); inspector.stop()
"""

from authwire.kernel.loader import Inspector, InspectorUnavailable, start_inspector

__all__ = ["Inspector", "InspectorUnavailable", "start_inspector"]
