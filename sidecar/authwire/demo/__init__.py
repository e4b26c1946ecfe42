"""Demo: `authwire demo` — Envoy + authwire + real client stacks in network namespaces; also the labs."""
