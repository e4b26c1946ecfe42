"""One-time login links and browser sessions (authwire.query.web_login), at their boundary."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from authwire.access import BearerToken
from authwire.counters import Counters
from authwire.query import web_login

TOKEN = BearerToken("s3cret-token-value-0123456789abcdef")
NOW = 1_800_000_000.0


def test_a_link_works_once_and_is_not_the_token():
    sessions = web_login.WebSessions(TOKEN, Counters())
    login = web_login.make_login(TOKEN, NOW)
    assert TOKEN.value not in login
    session = sessions.redeem(login, NOW + 1)
    assert session and sessions.valid(session, NOW + 2)
    assert sessions.redeem(login, NOW + 3) is None
    assert sessions.counters.get("web.login_rejected", "used") == 1


def test_a_link_expires_after_a_few_minutes():
    sessions = web_login.WebSessions(TOKEN, Counters())
    login = web_login.make_login(TOKEN, NOW)
    assert sessions.redeem(login, NOW + web_login.LOGIN_TTL + 1) is None
    assert sessions.counters.get("web.login_rejected", "expired") == 1


def test_sessions_expire_and_are_bounded():
    sessions = web_login.WebSessions(TOKEN, Counters())
    first = sessions.redeem(web_login.make_login(TOKEN, NOW), NOW)
    assert not sessions.valid(first, NOW + web_login.SESSION_TTL + 1)
    for _ in range(web_login.MAX_SESSIONS):
        sessions.redeem(web_login.make_login(TOKEN, NOW), NOW)
    assert not sessions.valid(first, NOW)  # the oldest was dropped, and that was counted
    assert sessions.counters.get("web.sessions_evicted") == 1


def test_a_link_made_with_another_token_is_refused():
    other = web_login.make_login(BearerToken("another-token-entirely-000000000000"), NOW)
    sessions = web_login.WebSessions(TOKEN, Counters())
    assert sessions.redeem(other, NOW) is None
    assert sessions.counters.get("web.login_rejected", "bad_mac") == 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_refused_without_raising(text):
    sessions = web_login.WebSessions(TOKEN, Counters())
    assert sessions.redeem(text, NOW) is None
    assert sessions.valid(text, NOW) is False


def test_the_page_never_writes_markup_from_data():
    """The web view builds the DOM with textContent / createElement only."""
    source = (Path(web_login.__file__).parent / "web" / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in source, sink
