"""Ingest: what the gateways send. gRPC Ingest, gRPC-Web (OpenResty plugins), Envoy ALS; one validation."""
