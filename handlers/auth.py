"""The bearer function Connexion calls: verify the JWT, return who the caller is (RFC 8725 rules).

Accepted: HS256 with BETTER_AUTH_SECRET (user in `sub`, or in `user.id` for Better Auth's
cookie-cache token), and Better Auth's JWT plugin tokens (EdDSA, ES*, RS*, PS*) verified against
its JWKS. `kid`, `jku` and `x5u` only ever select among keys we fetched ourselves.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
from connexion.lifecycle import ConnexionRequest

from handlers.jwks import ASYMMETRIC_ALGORITHMS, KeySet, KeysUnavailable
from todo_api.problems import Forbidden, ServiceUnavailable, Unauthorized
from todo_api.settings import Settings

# Far above any real token (Better Auth's are < 2 KB); checked before any parsing or crypto.
MAX_TOKEN_BYTES = 8192
MAX_CLAIM_CHARS = 320
# A verified token is trusted again for this long (never past its exp): verification is a large
# share of a request's CPU, and a frontend sends the same token many times a minute.
VERIFIED_SECONDS = 60
VERIFIED_TOKENS = 10_000
_verified: dict[bytes, tuple[float, dict[str, str | None]]] = {}


def _remember(fingerprint: bytes, caller: dict[str, str | None], *, until: float) -> None:
    if len(_verified) >= VERIFIED_TOKENS:
        del _verified[next(iter(_verified))]  # the oldest entry
    _verified[fingerprint] = (until, caller)


@dataclass(frozen=True, slots=True)
class _Config:
    secret: str | None
    issuer: str | None
    audience: str | None
    leeway: int
    jwks: KeySet | None = None
    jwks_issuer: str | None = None
    jwks_audience: str | None = None


_config = _Config(secret=None, issuer=None, audience=None, leeway=0)


def configure(settings: Settings) -> None:
    global _config
    _verified.clear()
    jwks_url = settings.jwt_jwks_url
    origin = None
    if settings.better_auth_url:
        parts = urlsplit(settings.better_auth_url)
        origin = f"{parts.scheme}://{parts.netloc}"
        jwks_url = jwks_url or settings.better_auth_url + "/api/auth/jwks"
    _config = _Config(
        secret=settings.better_auth_secret,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway=settings.jwt_leeway_seconds,
        jwks=KeySet(jwks_url, min_refresh_seconds=settings.jwks_min_refresh_seconds) if jwks_url else None,
        # Better Auth's JWT plugin sets both to its base URL's origin.
        jwks_issuer=settings.jwt_issuer or origin,
        jwks_audience=settings.jwt_audience or origin,
    )


async def verify_token(token: str, request: ConnexionRequest) -> dict[str, str | None]:
    """The caller as `{"sub", "email", "name"}`; 401 for any bad token, 403 for a foreign path user."""
    fingerprint = hashlib.blake2b(token.encode(errors="surrogatepass"), digest_size=16).digest()
    remembered = _verified.get(fingerprint)
    if remembered is not None and remembered[0] > time.time():
        caller = remembered[1]
    else:
        claims = await _claims(token)
        caller = _caller(claims)
        _remember(fingerprint, caller, until=min(claims["exp"] + _config.leeway, time.time() + VERIFIED_SECONDS))
    path_user = request.path_params.get("user_id")
    if path_user is not None and path_user != caller["sub"]:
        raise Forbidden("the user in the path is not the signed-in user")
    return caller


async def _claims(token: str) -> dict[str, Any]:
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthorized("the token is too large")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise Unauthorized("the token is malformed") from None
    if "crit" in header:
        raise Unauthorized("the token uses critical header extensions this server does not support")
    algorithm = header.get("alg")
    if algorithm == "HS256" and _config.secret is not None:
        issuer, audience = _config.issuer, _config.audience
        if (issuer or audience) and _is_cookie_cache(token):
            issuer = audience = None  # Better Auth's cookie-cache token never carries iss or aud
        return _decode(token, _config.secret, "HS256", issuer, audience)
    if algorithm in ASYMMETRIC_ALGORITHMS and _config.jwks is not None:
        kid = header.get("kid")
        try:
            keys = await _config.jwks.keys_for(kid if isinstance(kid, str) else None, algorithm)
        except KeysUnavailable:
            raise ServiceUnavailable("the signing keys cannot be fetched right now; retry shortly") from None
        if not keys:
            raise Unauthorized("the token is signed by an unknown key")
        failure: Unauthorized | None = None
        for key in keys:
            try:
                return _decode(token, key.key, algorithm, _config.jwks_issuer, _config.jwks_audience)
            except Unauthorized as error:
                failure = error
        raise failure or Unauthorized("the token's signature is not valid")
    raise Unauthorized(f"tokens signed with {algorithm!r} are not accepted")


def _is_cookie_cache(token: str) -> bool:
    """Shaped like Better Auth's session cookie cache (`session` and `user`, no `sub`); unverified."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return False
    return "sub" not in claims and isinstance(claims.get("user"), dict) and isinstance(claims.get("session"), dict)


def _decode(token: str, key: Any, algorithm: str, issuer: str | None, audience: str | None) -> dict[str, Any]:
    try:
        return jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            issuer=issuer,
            audience=audience,
            leeway=_config.leeway,
            options={"require": ["exp"], "verify_aud": audience is not None},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the token has expired") from None
    except jwt.ImmatureSignatureError:
        raise Unauthorized("the token is not valid yet") from None
    except jwt.MissingRequiredClaimError as error:
        raise Unauthorized(f"the token has no {error.claim!r} claim") from None
    except jwt.InvalidIssuerError:
        raise Unauthorized("the token's issuer is not accepted") from None
    except jwt.InvalidAudienceError:
        raise Unauthorized("the token's audience is not accepted") from None
    except jwt.InvalidSignatureError:
        raise Unauthorized("the token's signature is not valid") from None
    except (jwt.InvalidTokenError, TypeError, ValueError):
        raise Unauthorized("the token is malformed") from None


def _caller(claims: dict[str, Any]) -> dict[str, str | None]:
    """The subject from `sub`, or from `user.id` in Better Auth's cookie-cache token."""
    profile: dict[str, Any] = claims
    if "sub" not in claims and isinstance(claims.get("user"), dict):
        profile = claims["user"]
        subject = profile.get("id")
    else:
        subject = claims.get("sub")
    if _text(subject, limit=255) is None or not subject.strip():
        raise Unauthorized("the token has no usable subject")
    return {"sub": subject, "email": _text(profile.get("email")), "name": _text(profile.get("name"))}


def _text(value: Any, *, limit: int = MAX_CLAIM_CHARS) -> str | None:
    """`value` if it is a string PostgreSQL can store (no NUL, no lone surrogate), else None."""
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        return None
    return value
