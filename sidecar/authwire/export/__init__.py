"""Export: records and counters leaving the sidecar for fleets (Prometheus metrics, OTLP logs)."""
