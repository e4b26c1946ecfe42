"""`authwire alerts` output: the table escapes what a client could have sent; json is the proto3 mapping."""

from __future__ import annotations

import io
import json

from authwire.detect import render
from authwire.v1 import record_pb2


def test_table_escapes_control_and_bidi_characters():
    alert = record_pb2.Alert(id="A1", detection="credential_replay", key="credential=\x1b[2Jevil\u202e",
                             summary="credential \x1b[31mroot\n succeeded")
    out = io.StringIO()
    render.alerts([alert], "table", out)
    text = out.getvalue()
    assert "\x1b" not in text and "\u202e" not in text and "\\x1b[2Jevil\\u202e" in text
    assert len(text.splitlines()) == 2  # header + one row: the newline did not break the line
    follow = io.StringIO()
    render.alerts([alert], "table", follow, header=False)
    assert "\x1b" not in follow.getvalue() and len(follow.getvalue().splitlines()) == 1


def test_json_keeps_the_values_exact():
    alert = record_pb2.Alert(id="A1", summary="a\x1bb", severity=record_pb2.ALERT_SEVERITY_CRITICAL)
    out = io.StringIO()
    render.alerts([alert], "json", out)
    assert json.loads(out.getvalue()) == {"id": "A1", "summary": "a\x1bb", "severity": "ALERT_SEVERITY_CRITICAL"}
