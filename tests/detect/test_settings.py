"""A bad rule config is refused at start with a message naming the key."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authwire import config
from tests.support import AUTHWIRE


@pytest.mark.parametrize(("env", "key"), [
    ({"AUTHWIRE_STACK_STUFFING_MIN_FAILURE_RATIO": "1.5"}, "stack_stuffing_min_failure_ratio"),
    ({"AUTHWIRE_STACK_STUFFING_WINDOW": "soon"}, "stack_stuffing_window"),
    ({"AUTHWIRE_KEEPALIVE_STUFFING_MIN_FAILURES": "1"}, "keepalive_stuffing_min_failures"),
    ({"AUTHWIRE_DETECTIONS": "stack_stuffing,port_scan"}, "detections"),
    ({"AUTHWIRE_DETECT_BLOCK": "keepalive_stuffing:-5m"}, "detect_block"),
    ({"AUTHWIRE_DETECT_MAX_KEYS": "many"}, "detect_max_keys"),
    ({"AUTHWIRE_CREDENTIAL_REPLAY_CONCURRENT": "2h"}, "credential_replay_concurrent"),
])
def test_bad_rule_setting_names_the_key(env, key):
    with pytest.raises(config.ConfigError, match=key):
        config.load(None, env)


def test_good_rule_settings_load():
    cfg = config.load(None, {"AUTHWIRE_DETECTIONS": "off", "AUTHWIRE_DETECT_BLOCK": "stack_stuffing:15m"})
    from authwire.detect.settings import from_config

    settings = from_config(cfg)
    assert settings.enabled == () and settings.block == {"stack_stuffing": 900.0}


def test_serve_refuses_a_bad_rule_in_the_toml_file(tmp_path):
    toml = tmp_path / "authwire.toml"
    toml.write_text('stack_stuffing_min_failure_ratio = 0\n')
    result = subprocess.run([AUTHWIRE, "serve", "--config", str(toml), "--db", str(tmp_path / "a.db"),
                             "--listen", f"unix:{tmp_path / 's.sock'}", "--no-inspector"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "stack_stuffing_min_failure_ratio" in result.stderr
    assert not (tmp_path / "a.db").exists()  # refused before anything started


DETECTION_KEYS = [f.name for f in config.Config.fields()
                  if f.name.startswith(("detect", "stack_stuffing", "credential_replay", "ua_stack", "keepalive"))]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(DETECTION_KEYS), st.text(max_size=30) | st.sampled_from(["nan", "inf", "-1", "1e400", "0",
                                                                             "stack_stuffing:nan", "1e9d"]))
def test_any_value_of_a_rule_setting_loads_or_is_refused_naming_it(key, value):
    try:
        cfg = config.load(None, {f"AUTHWIRE_{key.upper()}": value})
    except config.ConfigError as exc:
        assert key in str(exc)
    else:
        from authwire.detect.settings import from_config

        rules = from_config(cfg)  # what loaded is usable: finite, positive windows and TTLs
        for name in ("stack_stuffing_window", "credential_replay_window", "credential_replay_concurrent",
                     "ua_stack_mismatch_window", "keepalive_stuffing_window", "stack_stuffing_min_failure_ratio"):
            assert 0 < getattr(rules, name) < 1e9, name
        assert all(0 < ttl < 1e9 for ttl in rules.block.values())
