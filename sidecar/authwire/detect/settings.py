"""The detections' settings, read from Config (`# --- detections ---`) and checked once at start.

A bad value is refused with a ConfigError that names the setting, so `authwire serve` never starts with a
rule it cannot apply (e.g. `stack_stuffing_min_failure_ratio: 1.5 is outside (0, 1]`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from authwire.config import Config, ConfigError, parse_duration

DETECTIONS = ("stack_stuffing", "credential_replay", "ua_stack_mismatch", "keepalive_stuffing")
DEFAULT_BLOCK_TTL_S = 600.0
MAX_KEYS_LIMIT = 1_000_000  # memory: each key holds at most a few kB
MAX_WINDOW_S = 30 * 86400


@dataclass(frozen=True)
class DetectSettings:
    enabled: tuple[str, ...] = DETECTIONS
    queue: int = 100_000
    max_keys: int = 10_000
    stack_stuffing_window: float = 600.0
    stack_stuffing_min_failures: int = 20
    stack_stuffing_min_ips: int = 10
    stack_stuffing_min_credentials: int = 10
    stack_stuffing_min_failure_ratio: float = 0.8
    credential_replay_window: float = 3600.0
    credential_replay_concurrent: float = 300.0
    ua_stack_mismatch_window: float = 3600.0
    ua_stack_mismatch_max_new_per_minute: int = 30
    keepalive_stuffing_window: float = 600.0
    keepalive_stuffing_min_failures: int = 20
    keepalive_stuffing_min_credentials: int = 3
    block: dict[str, float] = field(default_factory=dict)  # detection -> TTL seconds


def _duration(config: Config, name: str) -> float:
    try:
        value = parse_duration(str(getattr(config, name)))
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    if not 0 < value < MAX_WINDOW_S:  # also refuses nan and inf
        raise ConfigError(f"{name}: must be longer than 0 and shorter than 30 days (got {getattr(config, name)!r})")
    return value


def _at_least(config: Config, name: str, minimum: int, maximum: int | None = None) -> int:
    value = getattr(config, name)
    if value < minimum:
        raise ConfigError(f"{name}: {value} is too small (minimum {minimum})")
    if maximum is not None and value > maximum:  # beyond what the detection's bounded memory can ever hold
        raise ConfigError(f"{name}: {value} is too large (maximum {maximum})")
    return value


def from_config(config: Config) -> DetectSettings:
    """Settings from a loaded Config; raises ConfigError naming the first bad key."""
    names = [n.strip().lower() for n in config.detections if n.strip()]
    if names in (["off"], ["none"]):
        names = []
    for name in names:
        if name not in DETECTIONS:
            raise ConfigError(f"detections: unknown detection {name!r} (known: {', '.join(DETECTIONS)}; "
                              "'off' disables all)")
    ratio = config.stack_stuffing_min_failure_ratio
    if not 0 < ratio <= 1:
        raise ConfigError(f"stack_stuffing_min_failure_ratio: {ratio} is outside (0, 1]")
    max_keys = _at_least(config, "detect_max_keys", 16)
    if max_keys > MAX_KEYS_LIMIT:
        raise ConfigError(f"detect_max_keys: {max_keys} is too large (maximum {MAX_KEYS_LIMIT})")
    block: dict[str, float] = {}
    for item in config.detect_block:
        name, _, ttl = item.partition(":")
        name = name.strip().lower()
        if name not in DETECTIONS:
            raise ConfigError(f"detect_block: unknown detection {name!r} in {item!r} (known: {', '.join(DETECTIONS)})")
        try:
            seconds = parse_duration(ttl) if ttl.strip() else DEFAULT_BLOCK_TTL_S
        except ConfigError as exc:
            raise ConfigError(f"detect_block: {item!r}: {exc}") from None
        if not 0 < seconds <= MAX_WINDOW_S:  # the kernel block list takes at most 30 days
            raise ConfigError(f"detect_block: {item!r}: the TTL must be longer than 0 and at most 30 days")
        block[name] = seconds
    concurrent = _duration(config, "credential_replay_concurrent")
    replay_window = _duration(config, "credential_replay_window")
    if concurrent > replay_window:
        raise ConfigError(f"credential_replay_concurrent: {config.credential_replay_concurrent!r} is longer than "
                          f"credential_replay_window {config.credential_replay_window!r}")
    return DetectSettings(
        enabled=tuple(names),
        queue=_at_least(config, "detect_queue", 1000),
        max_keys=max_keys,
        stack_stuffing_window=_duration(config, "stack_stuffing_window"),
        stack_stuffing_min_failures=_at_least(config, "stack_stuffing_min_failures", 2, 2048),
        stack_stuffing_min_ips=_at_least(config, "stack_stuffing_min_ips", 2, 1000),
        stack_stuffing_min_credentials=_at_least(config, "stack_stuffing_min_credentials", 1, 2048),
        stack_stuffing_min_failure_ratio=ratio,
        credential_replay_window=replay_window,
        credential_replay_concurrent=concurrent,
        ua_stack_mismatch_window=_duration(config, "ua_stack_mismatch_window"),
        ua_stack_mismatch_max_new_per_minute=_at_least(config, "ua_stack_mismatch_max_new_per_minute", 1),
        keepalive_stuffing_window=_duration(config, "keepalive_stuffing_window"),
        keepalive_stuffing_min_failures=_at_least(config, "keepalive_stuffing_min_failures", 2, 1024),
        keepalive_stuffing_min_credentials=_at_least(config, "keepalive_stuffing_min_credentials", 1, 1024),
        block=block,
    )


def check(config: Config) -> None:
    """Refuse a bad detection setting at start (called from config.load)."""
    from_config(config)
