"""The secret scanner: does a free-text value look like a credential (token, password, key, signature)?

No secret may be stored, and every text field of an AuthEvent is attacker-influenced (user agent, path,
host, X-Forwarded-For, request id) or reporter-built (consumer, credential id, claims, message): a reporter
bug or a hostile client can put a credential in any of them.

Linear and bounded by construction, and cheap on ordinary text:
- it runs after the length limits, so on a few KiB per event at most;
- every shape is anchored at a literal trigger (`eyJ`, `bearer`, `password`, `AKIA`, ...) found with
  str.find, and the pattern matched there consumes a bounded run (fixed repetition counts, no unbounded
  quantifier before a required literal): work is O(length x triggers), never quadratic;
- one pass covers all fields of an event at once (joined with NUL, which no shape crosses); only an event
  that hits is scanned field by field to name the fields.
"""

from __future__ import annotations

import re

_TOKEN68 = "A-Za-z0-9+/=._~-"
# Anchored at the trigger word; (?<!...) keeps "mybasic" from counting (lookbehind sees before pos).
_AT = {
    # A JWT/JWS/JWE, or only its header: base64url of '{"' is 'eyJ'; 12 more base64url characters tell it
    # from a word, and so does a shorter part followed by a dot (searching for all dots made the old pattern
    # quadratic).
    "eyJ": re.compile(r"eyJ(?:[A-Za-z0-9_-]{12}|[A-Za-z0-9_-]{1,11}\.[A-Za-z0-9_-]{2})"),
    # AWS-style access key ids.
    **{k: re.compile(rf"(?<![A-Z0-9]){k}[A-Z0-9]{{16}}(?![A-Z0-9])") for k in ("AKIA", "ASIA", "AIDA", "AROA")},
    "PRIVATE KEY": re.compile("PRIVATE KEY"),  # -----BEGIN ... PRIVATE KEY-----
}
# Case-insensitive triggers (searched in the lower-cased text, matched in the original).
# An Authorization value: scheme, then a credential (8+ token68 characters, RFC 9110 11.4) holding a
# digit, symbol or inner capital ("Basic dXNlcjpw" is one; "Basic authentication required" is not).
_SCHEME = (rf"(?i:{{}})\s{{{{1,8}}}}(?=[{_TOKEN68}]{{{{8}}}})[{_TOKEN68}][a-z._~-]{{{{0,256}}}}?[A-Z0-9+/=]")
# name=value or name: value with a secret's name (password=x, api_key=..., client_secret: ...); after a
# colon the value must look like one (a digit, symbol or capital), so "password: missing" stays a message.
_NAMED = (r"(?i:{}[a-z_-]{{0,12}})\s{{0,4}}"
          r"(?:=\s{{0,4}}[^\s\x00&;,]|:\s{{0,4}}(?=[^\s\x00]{{6}})[a-z]{{0,256}}?[^a-z\s\x00])")
_FOLDED_AT = {
    **{w: re.compile(r"(?<![A-Za-z0-9])" + _SCHEME.format(w)) for w in ("basic", "bearer", "digest", "negotiate")},
    **{w: re.compile(_NAMED.format(w)) for w in ("pass", "pwd", "secret", "token", "key", "session", "signature")},
}
# In identity fields only (consumer, credential id, subject), ordinary in a path: a long hex key, or a 28+
# character base64 run with lower case, upper case and digits (a secret key, or the secret half of a
# key:secret pair). One search per run start (the lookbehind), each bounded.
_B64 = "[A-Za-z0-9+/=_-]"
_IDENTITY = re.compile(
    r"(?<![0-9A-Za-z])[0-9a-fA-F]{32,}(?![0-9A-Za-z])"
    rf"|(?<!{_B64})(?={_B64}{{28}})(?={_B64}{{0,256}}?[a-z])(?={_B64}{{0,256}}?[A-Z])(?={_B64}{{0,256}}?[0-9])")
_IDENTITY_TRIGGER = re.compile(r"[A-Za-z0-9+/=_-]{28}")  # a hex run of 32 is one too
_IDENTITY_MIN = 28  # shorter values hold no identity shape: skip the search
# The gateway plugins' keyed pseudonym of a credential id (pseudonymize_credentials: HMAC-SHA256 of the id,
# gateway-plugins/lua/authwire/event.lua credential_id): a hash made so that no id is sent, not a secret.
_PSEUDONYM = re.compile(r"hmac-sha256:[0-9a-f]{64}")
_SEP = "\x00"


def _any_at(triggers: dict[str, re.Pattern], haystack: str, text: str) -> bool:
    for word, pattern in triggers.items():
        i = haystack.find(word)
        while i >= 0:
            if pattern.match(text, i):
                return True
            i = haystack.find(word, i + 1)
    return False


def looks_secret(value: str, identity: bool = False) -> bool:
    """True when value contains a credential shape (identity=True adds the identity-field shapes)."""
    if identity and _PSEUDONYM.fullmatch(value):
        return False
    if _any_at(_AT, value, value) or _any_at(_FOLDED_AT, value.lower(), value):
        return True
    return identity and _IDENTITY_TRIGGER.search(value) is not None and _IDENTITY.search(value) is not None


def secret_indexes(values: tuple[str, ...] | list[str], plain: list[int], identity: list[int]) -> list[int]:
    """Indexes (into values) of the fields that look secret: plain ones get the shapes found anywhere,
    identity ones those plus the identity shapes. One pass over all values joined for the common case of
    none; values not listed in either are scanned by that pass too (harmless: they hold no trigger)."""
    if not looks_secret(_SEP.join(values)) and not any(
            len(values[i]) >= _IDENTITY_MIN and _IDENTITY_TRIGGER.search(values[i]) and _IDENTITY.search(values[i])
            for i in identity):
        return []
    return [i for i in plain if values[i] and looks_secret(values[i])] + \
        [i for i in identity if values[i] and looks_secret(values[i], identity=True)]


def secret_fields(plain: list[tuple[str, str]], identity: list[tuple[str, str]]) -> list[str]:
    """Names of the (name, value) fields that look secret; identity fields also get the identity shapes."""
    names = [n for n, _ in plain] + [n for n, _ in identity]
    values = [v for _, v in plain] + [v for _, v in identity]
    hits = secret_indexes(values, list(range(len(plain))), list(range(len(plain), len(values))))
    return [names[i] for i in hits]
