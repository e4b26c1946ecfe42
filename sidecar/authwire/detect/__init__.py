"""Detect: streaming detections on committed records (after the ack, never on it) that raise alerts."""
