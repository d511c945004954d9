"""The bearer function Connexion calls: verify the JWT, return who the caller is (RFC 8725 rules).

Accepted: HS256 with any shared secret (BETTER_AUTH_SECRETS', BETTER_AUTH_SECRET; user in `sub`,
or in `user.id` for Better Auth's cookie-cache token), and Better Auth's JWT plugin tokens (EdDSA,
ES*, RS*, PS*) verified against its JWKS. `kid`, `jku` and `x5u` only ever select among keys we
fetched ourselves."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import jwt
from connexion.lifecycle import ConnexionRequest

from handlers import state
from handlers.jwks import ASYMMETRIC_ALGORITHMS, KeySet, KeysUnavailable
from handlers.problems import Forbidden, ServiceUnavailable, TooManyRequests, Unauthorized
from handlers.rate_limit import RateLimited

_HS256 = jwt.PyJWS()
# Far above any real token (Better Auth's are < 2 KB); checked before any parsing or crypto.
MAX_TOKEN_BYTES = 8192
MAX_CLAIM_CHARS = 320
MAX_SUBJECT_CHARS = 255  # the users.id a subject becomes
# A verified token is trusted again for this long (never past its exp): verification is a large
# share of a request's CPU, and a frontend sends the same token many times a minute.
VERIFIED_SECONDS = 60
VERIFIED_TOKENS = 10_000
# `sub`, `email` and `name` (str or None), and `exp`: when the token stops standing (float).
Caller = dict[str, Any]


@dataclass(frozen=True, slots=True)
class TokenRules:
    """Which tokens an application accepts."""

    secrets: tuple[str, ...]  # shared secrets for HS256, the current first
    issuer: str | None
    # Checked whenever a token names an audience; required of HS256 tokens only when configured
    # explicitly (JWT_AUDIENCE), as Better Auth's shared-secret tokens carry none by default.
    audience: str | None
    hs256_audience_required: bool
    leeway: int
    jwks: KeySet | None = None
    jwks_issuer: str | None = None


class VerifiedTokens:
    """The callers of the tokens an application verified lately, by the token's fingerprint, each
    until a moment; at most VERIFIED_TOKENS of them, the oldest dropped first."""

    def __init__(self) -> None:
        self._callers: dict[bytes, tuple[float, Caller]] = {}

    def get(self, fingerprint: bytes) -> Caller | None:
        remembered = self._callers.get(fingerprint)
        if remembered is None or remembered[0] <= time.time():
            return None
        return remembered[1]

    def remember(self, fingerprint: bytes, caller: Caller, *, until: float) -> None:
        if len(self._callers) >= VERIFIED_TOKENS:
            del self._callers[next(iter(self._callers))]  # the oldest entry
        self._callers[fingerprint] = (until, caller)


def token_rules(
    *,
    secrets: Sequence[str],
    better_auth_url: str | None,
    jwks_url: str | None,
    issuer: str | None,
    audience: str | None,
    leeway_seconds: int,
    jwks_min_refresh_seconds: int,
) -> TokenRules:
    """Accept HS256 tokens signed with any of `secrets`, and tokens signed by the keys of Better Auth at
    `better_auth_url` (or of `jwks_url`)."""
    origin = None
    if better_auth_url:
        parts = urlsplit(better_auth_url)
        origin = f"{parts.scheme}://{parts.netloc}"
        jwks_url = jwks_url or _jwks_url(better_auth_url)
    return TokenRules(
        secrets=tuple(secrets),
        issuer=issuer,
        # Better Auth's JWT plugin sets issuer and audience to its base URL's origin.
        audience=audience or origin,
        hs256_audience_required=audience is not None,
        leeway=leeway_seconds,
        jwks=KeySet(jwks_url, min_refresh_seconds=jwks_min_refresh_seconds) if jwks_url else None,
        jwks_issuer=issuer or origin,
    )


def _jwks_url(better_auth_url: str) -> str:
    """Better Auth's JWKS for its origin (`…/api/auth/jwks`) or for a URL with its base path
    (`https://app.example/api/auth` → `…/api/auth/jwks`): both spellings are common."""
    if urlsplit(better_auth_url).path.strip("/"):
        return better_auth_url + "/jwks"
    return better_auth_url + "/api/auth/jwks"


async def verify_token(token: str, request: ConnexionRequest) -> Caller:
    """The caller as `{"sub", "email", "name", "exp"}`; 401 for any bad token, 403 for a foreign path user."""
    app = state.of(request.scope)
    rules = app.tokens
    fingerprint = hashlib.blake2b(token.encode(errors="surrogatepass"), digest_size=16).digest()
    caller = app.verified_tokens.get(fingerprint)
    if caller is None:
        claims = await _claims(rules, token)
        caller, expires = _caller(rules, claims)
        until = min(expires + rules.leeway, time.time() + VERIFIED_SECONDS)
        app.verified_tokens.remember(fingerprint, caller, until=until)
    await _count(request.scope, str(caller["sub"]))
    path_user = request.path_params.get("user_id")
    if path_user is not None and path_user != caller["sub"]:
        raise Forbidden("the user in the path is not the signed-in user")
    return caller


async def _count(scope: MutableMapping[str, Any], user: str) -> None:
    """Admit the request under `user`'s rate limit (not one the application makes to itself); 429
    with Retry-After and the RateLimit fields when its token would not come within a short wait."""
    limiter = state.of(scope).rate_limiter
    if limiter is None or scope.get(state.INTERNAL):
        return
    try:
        scope["state"][state.ADMISSION] = await limiter.admit(user)  # released as the answer starts
    except RateLimited as refused:
        headers = {"Retry-After": str(refused.retry_after), **refused.quota.headers()}
        raise TooManyRequests(
            "you are sending requests faster than your rate limit; slow down", headers=headers
        ) from None


async def _claims(rules: TokenRules, token: str) -> dict[str, Any]:
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthorized("the token is too large")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise Unauthorized("the token is malformed") from None
    if "crit" in header:
        raise Unauthorized("the token uses critical header extensions this server does not support")
    algorithm = header.get("alg")
    if not isinstance(algorithm, str):
        raise Unauthorized("the token's alg is not a string")
    if algorithm == "HS256" and rules.secrets:
        issuer, audience_required = rules.issuer, rules.hs256_audience_required
        if (issuer or audience_required) and _is_cookie_cache(token):
            # Better Auth's cookie-cache token never carries iss or aud (an aud it has is still checked).
            issuer, audience_required = None, False
        secret = _signing_secret(rules.secrets, token)
        return _decode(rules, token, secret, "HS256", issuer, audience_required=audience_required)
    if algorithm in ASYMMETRIC_ALGORITHMS and rules.jwks is not None:
        kid = header.get("kid")
        try:
            keys = await rules.jwks.keys_for(kid if isinstance(kid, str) else None, algorithm)
        except KeysUnavailable:
            raise ServiceUnavailable("the signing keys cannot be fetched right now; retry shortly") from None
        if not keys:
            raise Unauthorized("the token is signed by an unknown key")
        failure: Unauthorized | None = None
        for key in keys:
            try:
                return _decode(rules, token, key.key, algorithm, rules.jwks_issuer, audience_required=True)
            except Unauthorized as error:
                failure = error
        raise failure or Unauthorized("the token's signature is not valid")
    raise Unauthorized(f"tokens signed with {algorithm!r} are not accepted")


def _signing_secret(secrets: tuple[str, ...], token: str) -> str:
    """Which of `secrets` signed `token`; the last when none did (or it is malformed), whose check
    then says why. The current secret comes first, so most tokens cost one HMAC here."""
    for secret in secrets[:-1]:
        try:
            _HS256.decode_complete(token, secret, algorithms=["HS256"])
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidTokenError:
            break
        return secret
    return secrets[-1]


def _is_cookie_cache(token: str) -> bool:
    """Shaped like Better Auth's session cookie cache (`session` and `user`, no `sub`); unverified."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return False
    return "sub" not in claims and isinstance(claims.get("user"), dict) and isinstance(claims.get("session"), dict)


def _decode(
    rules: TokenRules, token: str, key: Any, algorithm: str, issuer: str | None, *, audience_required: bool
) -> dict[str, Any]:
    """The verified claims; `aud`, when present (or required), must name the configured audience."""
    audience = rules.audience
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            issuer=issuer,
            leeway=rules.leeway,
            options={"require": ["exp"], "verify_aud": False},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the token has expired") from None
    except jwt.ImmatureSignatureError:
        raise Unauthorized("the token is not valid yet") from None
    except jwt.MissingRequiredClaimError as error:
        raise Unauthorized(f"the token has no {error.claim!r} claim") from None
    except jwt.InvalidIssuerError:
        raise Unauthorized("the token's issuer is not accepted") from None
    except jwt.InvalidSignatureError:
        raise Unauthorized("the token's signature is not valid") from None
    except (jwt.InvalidTokenError, TypeError, ValueError, OverflowError):
        raise Unauthorized("the token is malformed") from None
    for name in ("exp", "nbf", "iat"):
        if name in claims and not _is_numeric_date(claims[name]):
            raise Unauthorized(f"the token's {name!r} is not a NumericDate (a JSON number of seconds)")
    if audience is not None and ("aud" in claims or audience_required):
        named = claims.get("aud")
        if named is None:
            raise Unauthorized("the token has no 'aud' claim")
        if audience not in ([named] if isinstance(named, str) else named if isinstance(named, list) else []):
            raise Unauthorized("the token's audience is not accepted")
    return claims


def _caller(rules: TokenRules, claims: dict[str, Any]) -> tuple[Caller, float]:
    """The subject from `sub`, or from `user.id` in Better Auth's cookie-cache token, and until
    when the token stands (its `exp`, or its session's end if sooner)."""
    profile: dict[str, Any] = claims
    expires = float(claims["exp"])
    if "sub" not in claims and isinstance(claims.get("user"), dict):
        profile = claims["user"]
        subject = profile.get("id")
        expires = min(expires, _session_end(rules, claims.get("session")))
    else:
        subject = claims.get("sub")
    if subject is None or _text(subject, limit=MAX_SUBJECT_CHARS) is None or not subject.strip():
        raise Unauthorized("the token has no usable subject")
    caller = {"sub": subject, "email": _text(profile.get("email")), "name": _text(profile.get("name")), "exp": expires}
    return caller, expires


def _session_end(rules: TokenRules, session: Any) -> float:
    """When the cookie-cache token's session ends: Better Auth writes `expiresAt` as an ISO 8601
    string (a JSON Date); a NumericDate is taken too. No session, or an ended one, is a 401."""
    if not isinstance(session, dict):
        raise Unauthorized("the cookie-cache token has no session")
    expires_at = session.get("expiresAt")
    end: float | None = None
    if _is_numeric_date(expires_at):
        end = float(expires_at)
    elif isinstance(expires_at, str) and len(expires_at) <= 64:
        try:
            moment = datetime.fromisoformat(expires_at)
            end = moment.timestamp() if moment.tzinfo is not None else None
        except ValueError:
            end = None
    if end is None:
        raise Unauthorized("the cookie-cache token's session has no valid expiresAt")
    if end + rules.leeway < time.time():
        raise Unauthorized("the session has ended")
    return end


def _is_numeric_date(value: Any) -> TypeGuard[int | float]:
    """RFC 7519 NumericDate: a JSON number (not a string, not a boolean), finite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: Any, *, limit: int = MAX_CLAIM_CHARS) -> str | None:
    """`value` if it is a string PostgreSQL can store (no NUL, no lone surrogate), else None."""
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        return None
    return value
