"""Who may talk to the sidecar: the bearer token every TCP listener that accepts reports or serves records
requires (loopback included: on a shared host any local user can connect to 127.0.0.1).

- The token lives in a file (`--token-file`, env AUTHWIRE_TOKEN_FILE); `serve` creates it (0600, 32 random
  bytes, URL-safe) when the file does not exist yet, so a fresh install is protected without a setup step.
- Clients send `authorization: Bearer <token>` (gRPC metadata, gRPC-Web and HTTP headers alike).
- Comparison is constant-time; the token is never logged nor echoed (only the file's path is).
- Unix sockets rely on their file mode and need no token.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

TOKEN_BYTES = 32
MAX_TOKEN_FILE = 4096


class AccessError(ValueError):
    """The token file cannot be used; the message names the path and the fix (never the token)."""


class BearerToken:
    """A loaded token. `matches()` is the only way to compare with what a client presented."""

    __slots__ = ("_expected", "path")

    def __init__(self, token: str, path: str = "") -> None:
        if not token:
            raise AccessError(f"token file {path or '(inline)'} is empty")
        self._expected = token.encode()
        self.path = path

    def __repr__(self) -> str:  # never print the token itself
        return f"BearerToken(path={self.path!r})"

    def matches(self, presented: str | bytes | None) -> bool:
        if presented is None:
            return False
        if isinstance(presented, str):
            presented = presented.encode("utf-8", "replace")
        return hmac.compare_digest(presented, self._expected)

    def matches_authorization(self, header: str | bytes | None) -> bool:
        """True when header is `Bearer <token>` (scheme case-insensitive, RFC 6750)."""
        if header is None:
            return False
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        scheme, _, value = header.strip().partition(" ")
        return scheme.lower() == "bearer" and self.matches(value.strip())

    @property
    def value(self) -> str:
        """The token, for clients that must send it (CLI, tests). Never log it."""
        return self._expected.decode()


def load_token(path: str | Path) -> BearerToken:
    """Read a token file (first line, stripped). Raises AccessError naming the path."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise AccessError(f"token file {p}: {exc.strerror or exc}") from None
    if len(data) > MAX_TOKEN_FILE:
        raise AccessError(f"token file {p}: larger than {MAX_TOKEN_FILE} bytes; want one line with the token")
    text = data.decode("utf-8", "replace").strip().splitlines()
    return BearerToken(text[0].strip() if text else "", str(p))


def load_or_create_token(path: str | Path) -> BearerToken:
    """The token in path; a new random one (file mode 0600, parent made 0700) if the file does not exist."""
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_token(p)  # another process made it first
        except OSError as exc:
            raise AccessError(f"token file {p}: cannot create: {exc.strerror or exc}") from None
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    return load_token(p)


def client_token(path: str | Path | None = None) -> str | None:
    """For clients (CLI, tools): the token from path or AUTHWIRE_TOKEN_FILE, or None when neither is set."""
    path = path or os.environ.get("AUTHWIRE_TOKEN_FILE")
    return load_token(path).value if path else None
