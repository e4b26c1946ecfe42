"""How a browser gets into the web view without ever holding the bearer token (the Jupyter convention).

- A *login link* `http://HOST:PORT/?login=<one-time>` is printed by `authwire serve` / `authwire web` (and
  by `authwire web-url`, for whoever can read the token file). The one-time value is
  `<expiry>.<nonce>.<HMAC-SHA256(bearer token, expiry.nonce)>`: it proves its maker could read the token
  file without containing or revealing the token, it expires after LOGIN_TTL seconds, and the server
  remembers used nonces until they expire, so each link works once.
- `GET /?login=...` exchanges it for a random session id in an HttpOnly, SameSite=Strict cookie and
  redirects to `/` (the value leaves the address bar and history). Sessions live in memory, bounded.
- API clients keep sending `Authorization: Bearer`; the cookie is one more authenticator on the listener.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict

from aiohttp import web

from authwire.access import BearerToken
from authwire.counters import Counters

LOGIN_TTL = 300.0          # seconds a login link stays valid (if unused)
SESSION_TTL = 12 * 3600.0  # seconds a browser session lasts
MAX_SESSIONS = 256         # oldest sessions are dropped beyond this (counted)
MAX_USED_NONCES = 4096     # used one-time values remembered until they expire (bounded)
COOKIE = "authwire_session"
_MAX_LOGIN_TEXT = 200


def _mac(token: BearerToken, message: str) -> str:
    digest = hmac.new(token.value.encode(), b"authwire-web-login:" + message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def make_login(token: BearerToken, now: float | None = None, ttl: float = LOGIN_TTL) -> str:
    """A new one-time login value (for the `?login=` parameter)."""
    expiry = int((time.time() if now is None else now) + ttl)
    message = f"{expiry}.{secrets.token_urlsafe(16)}"
    return f"{message}.{_mac(token, message)}"


def login_url(base: str, token: BearerToken) -> str:
    return f"{base.rstrip('/')}/?login={make_login(token)}"


class WebSessions:
    def __init__(self, token: BearerToken, counters: Counters | None = None) -> None:
        self.token = token
        self.counters = counters or Counters()
        self._used: OrderedDict[str, float] = OrderedDict()      # nonce -> expiry
        self._sessions: OrderedDict[bytes, float] = OrderedDict()  # sha256(session id) -> expiry

    def redeem(self, login: str, now: float | None = None) -> str | None:
        """A valid, unused, unexpired login value -> a new session id; anything else -> None (counted)."""
        now = time.time() if now is None else now
        parts = login.split(".") if len(login) <= _MAX_LOGIN_TEXT else []
        if len(parts) != 3 or not parts[0].isdigit():
            self.counters.inc("web.login_rejected", "malformed")
            return None
        expiry_text, nonce, mac = parts
        if not hmac.compare_digest(mac.encode(), _mac(self.token, f"{expiry_text}.{nonce}").encode()):
            self.counters.inc("web.login_rejected", "bad_mac")
            return None
        expiry = int(expiry_text)
        if expiry < now or expiry > now + 2 * LOGIN_TTL:
            self.counters.inc("web.login_rejected", "expired")
            return None
        self._forget(self._used, now)
        if nonce in self._used:
            self.counters.inc("web.login_rejected", "used")
            return None
        if len(self._used) >= MAX_USED_NONCES:
            # Cannot remember one more: refuse rather than risk accepting a link twice.
            self.counters.inc("web.login_rejected", "too_many")
            return None
        self._used[nonce] = float(expiry)
        session = secrets.token_urlsafe(32)
        self._forget(self._sessions, now)
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.popitem(last=False)
            self.counters.inc("web.sessions_evicted")
        self._sessions[hashlib.sha256(session.encode()).digest()] = now + SESSION_TTL
        self.counters.inc("web.logins")
        return session

    def valid(self, session: str | None, now: float | None = None) -> bool:
        if not session or len(session) > _MAX_LOGIN_TEXT:
            return False
        expiry = self._sessions.get(hashlib.sha256(session.encode()).digest())
        return expiry is not None and expiry >= (time.time() if now is None else now)

    def authenticate(self, request: web.Request) -> bool:
        """The listener's authenticator: a live session cookie."""
        return self.valid(request.cookies.get(COOKIE))

    @staticmethod
    def _forget(entries: OrderedDict, now: float) -> None:
        for key in [k for k, expiry in entries.items() if expiry < now]:
            del entries[key]
