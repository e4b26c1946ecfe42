"""Throwaway identities for the demo, tests and bench: an RSA signing key + JWKS, JWTs, htpasswd lines.

Envoy's jwt_authn verifies against the JWKS inline in its config and basic_auth against the htpasswd
lines, so the same values drive the gateway config and the traffic generator. Nothing here is meant for
production; `gateway-plugins/envoy/README.md` says how to plug real keys in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://issuer.authwire.demo"
AUDIENCE = "authwire-demo-api"
KID = "authwire-demo-1"


@dataclass
class DemoCredentials:
    """One signing key the gateway trusts, one it does not (for bad signatures), and Basic users."""

    issuer: str = ISSUER
    audience: str = AUDIENCE
    kid: str = KID
    users: dict[str, str] = field(default_factory=lambda: {"alice": "wonderland", "bob": "builder"})

    def __post_init__(self) -> None:
        # 2048 bits: the smallest size Envoy's jwt_authn (BoringSSL) accepts without complaint.
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> str:
        jwk = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update({"kid": self.kid, "alg": "RS256", "use": "sig"})
        return json.dumps({"keys": [jwk]})

    def token(self, sub: str, *, expired: bool = False, bad_signature: bool = False,
              jti: str | None = None) -> str:
        now = int(time.time())
        # Expired well beyond jwt_authn's default 60 s clock skew allowance.
        iat, exp = (now - 900, now - 600) if expired else (now - 60, now + 3600)
        claims = {"iss": self.issuer, "sub": sub, "aud": self.audience, "iat": iat, "exp": exp}
        if jti:
            claims["jti"] = jti
        key = self._rogue if bad_signature else self._key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})

    def htpasswd(self) -> str:
        """Envoy basic_auth accepts only the htpasswd {SHA} format."""
        lines = []
        for user, password in self.users.items():
            digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
            lines.append(f"{user}:{{SHA}}{digest}")
        return "\n".join(lines) + "\n"


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def write_gateway_files(outdir: str) -> dict[str, str]:
    """Write jwks.json + htpasswd for gateway-plugins/envoy/envoy.yaml; return sample credentials.

    The private key stays in memory: the printed tokens are all there is to try the gateway with.
    """
    from pathlib import Path

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    creds = DemoCredentials()
    (out / "jwks.json").write_text(creds.jwks())
    (out / "htpasswd").write_text(creds.htpasswd())
    return {
        "jwt_valid": creds.token("alice"),
        "jwt_expired": creds.token("alice", expired=True),
        "jwt_bad_signature": creds.token("alice", bad_signature=True),
        "basic_valid": basic_header("alice", creds.users["alice"]),
        "basic_wrong_password": basic_header("alice", "not-the-password"),
    }


def main(argv: list[str] | None = None) -> int:
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m authwire.demo.credentials OUTDIR   (writes jwks.json and htpasswd)",
              file=sys.stderr)
        return 2
    samples = write_gateway_files(args[0])
    print(f"wrote {args[0]}/jwks.json and {args[0]}/htpasswd (demo identities; never use in production)")
    for name, value in samples.items():
        header = value if value.startswith("Basic ") else f"Bearer {value}"
        path = "/basic/" if name.startswith("basic") else "/jwt/"
        print(f"# {name}\ncurl -s -o /dev/null -w '%{{http_code}}\\n' -H 'Authorization: {header}' "
              f"http://localhost:8080{path}hello")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
