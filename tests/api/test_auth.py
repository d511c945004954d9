"""Authentication: only a verified token says who the caller is; every other request is a 401 (RFC 8725)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.support.jwks import JwksServer, SigningKey, b64url, hand_signed
from tests.support.problems import assert_problem
from tests.support.service import Service, raw_get
from tests.support.tokens import SECRET, claims, mint
from tests.support.users import User, task_count

ISSUER = "https://auth.example"
AUDIENCE = "https://api.example"
ATTACKER_SECRET = "attacker-secret-" + "y" * 40


def forge(header: dict[str, Any], payload: dict[str, Any], key: str | None = SECRET) -> str:
    """A JWT built by hand: HMAC-SHA256 over exactly this header and payload, or no signature when key is None."""
    return hand_signed(header, payload, key)


def cookie_cache_token(
    user_id: Any, *, secret: str = SECRET, ttl: int = 300, session_left: float = 600, **user: Any
) -> str:
    """Better Auth's session cookie-cache JWT: the user id is at `user.id`, there is no `sub`, and
    the session's `expiresAt` is a JSON Date (an ISO 8601 string)."""
    now = int(time.time())
    ends = datetime.fromtimestamp(now + session_left, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    payload = {
        "session": {"id": uuid.uuid4().hex, "userId": user_id, "expiresAt": ends, "token": uuid.uuid4().hex},
        "user": {"id": user_id, "emailVerified": True, **user},
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(payload, secret, algorithm="HS256")


def fresh_id() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def bearer(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


def tasks_as(client: httpx.Client, token: str, scheme: str = "Bearer") -> httpx.Response:
    return client.get("/api/tasks", headers=bearer(token, scheme))


@pytest.fixture(scope="module")
def strict_service(start_module_service: Callable[..., Service]) -> Service:
    """A service that allows no clock skew at all."""
    return start_module_service(JWT_LEEWAY_SECONDS="0")


@pytest.fixture(scope="module")
def issuer_service(start_module_service: Callable[..., Service]) -> Service:
    return start_module_service(JWT_ISSUER=ISSUER, JWT_AUDIENCE=AUDIENCE)


@pytest.fixture(scope="module")
def decoy() -> Iterator[JwksServer]:
    """A local HTTP server that records every request a token tries to send the service to."""
    server = JwksServer(path=None)
    yield server
    server.stop()


# --- every /api route needs a token; the probes do not ---------------------------------------------

ROUTES = [
    ("GET", "/api/tasks"),
    ("POST", "/api/tasks"),
    ("GET", "/api/tasks/1"),
    ("PUT", "/api/tasks/1"),
    ("PATCH", "/api/tasks/1"),
    ("DELETE", "/api/tasks/1"),
    ("PATCH", "/api/tasks/1/complete"),
    ("GET", "/api/someone/tasks"),
    ("POST", "/api/someone/tasks"),
    ("GET", "/api/someone/tasks/1"),
    ("PUT", "/api/someone/tasks/1"),
    ("PATCH", "/api/someone/tasks/1"),
    ("DELETE", "/api/someone/tasks/1"),
    ("PATCH", "/api/someone/tasks/1/complete"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_api_route_without_a_token_is_401(client: httpx.Client, method: str, path: str) -> None:
    body = None if method in ("GET", "DELETE") else {"title": "x"}
    assert_problem(client.request(method, path, json=body), 401)


@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_operational_probes_need_no_token(client: httpx.Client, path: str) -> None:
    assert client.get(path).status_code == 200


# --- the Authorization header itself ---------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Basic dXNlcjpwYXNzd29yZA==", id="basic-scheme"),
        pytest.param("Bearer", id="bearer-without-token"),
        pytest.param("Bearer garbage", id="garbage"),
        pytest.param("Bearer a.b.c", id="three-garbage-segments"),
        pytest.param("Bearer ....", id="dots-only"),
        pytest.param("Bearer eyJhbGciOiJIUzI1NiJ9.%%%.%%%", id="bad-base64"),
        pytest.param(f"Bearer {b64url(b'not json')}.{b64url(b'{}')}.sig", id="header-not-json"),
        pytest.param(f"Bearer {b64url(b'[1]')}.{b64url(b'{}')}.sig", id="header-not-object"),
        pytest.param("Token abc.def.ghi", id="unknown-scheme"),
    ],
)
def test_missing_or_malformed_authorization_is_401(client: httpx.Client, authorization: str) -> None:
    assert_problem(client.get("/api/tasks", headers={"Authorization": authorization}), 401)


@pytest.mark.parametrize("authorization", ["Bearer ", "Bearer    ", "Bearer \t"])
def test_an_empty_bearer_token_is_401(service: Service, authorization: str) -> None:
    assert_problem(raw_get(service, "/api/tasks", {"Authorization": authorization}, timeout=30), 401)


def test_bearer_token_sent_with_another_scheme_is_401(client: httpx.Client, alice: User) -> None:
    assert_problem(client.get("/api/tasks", headers={"Authorization": f"Token {alice.token}"}), 401)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_scheme_name_is_case_insensitive(client: httpx.Client, alice: User, scheme: str) -> None:
    response = tasks_as(client, alice.token, scheme)
    assert response.status_code == 200, response.text


def test_a_401_problem_is_json_with_detail_and_no_token_echo(client: httpx.Client) -> None:
    token = mint(fresh_id(), secret=ATTACKER_SECRET)
    problem = assert_problem(tasks_as(client, token), 401)
    assert token not in json.dumps(problem)
    assert SECRET not in json.dumps(problem)


@pytest.mark.parametrize("authorization", [None, "Basic dXNlcjpwYXNzd29yZA==", "Token abc.def.ghi"])
def test_a_request_without_a_bearer_token_gets_the_bare_challenge(
    client: httpx.Client, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.get("/api/tasks", headers=headers)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == 'Bearer realm="todo-api"'  # RFC 6750 3.1: no error code


def test_a_refused_token_gets_an_invalid_token_challenge_saying_why(client: httpx.Client) -> None:
    expired = mint(fresh_id(), ttl=-120)
    response = tasks_as(client, expired)
    problem = assert_problem(response, 401)
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="todo-api", error="invalid_token", error_description="{problem["detail"]}"'
    )


def test_a_hostile_alg_cannot_break_out_of_the_challenge(client: httpx.Client) -> None:
    token = forge({"alg": 'x"\r\nX-Injected: 1\u00e9\\', "typ": "JWT"}, claims(fresh_id()))
    response = tasks_as(client, token)
    assert_problem(response, 401)
    assert "x-injected" not in response.headers
    challenge = response.headers["www-authenticate"]
    description = challenge.split('error_description="', 1)[1]
    assert description.endswith('"') and all(" " <= c <= "~" and c not in '\\"' for c in description[:-1])


# --- signature and algorithm -----------------------------------------------------------------------


def test_alg_none_is_401(client: httpx.Client) -> None:
    for alg in ("none", "None", "NONE", "nOnE"):
        token = forge({"alg": alg, "typ": "JWT"}, claims(fresh_id()), key=None)
        assert_problem(tasks_as(client, token), 401)


def test_alg_none_with_a_leftover_signature_is_401(client: httpx.Client) -> None:
    signed = forge({"alg": "HS256", "typ": "JWT"}, claims(fresh_id()))
    signature = signed.rsplit(".", 1)[1]
    unsigned = forge({"alg": "none", "typ": "JWT"}, claims(fresh_id()), key=None)
    assert_problem(tasks_as(client, unsigned + signature), 401)


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_other_hmac_algorithms_with_the_right_secret_are_401(client: httpx.Client, algorithm: str) -> None:
    assert_problem(tasks_as(client, mint(fresh_id(), algorithm=algorithm)), 401)


def test_an_asymmetric_token_without_a_configured_key_is_401(client: httpx.Client) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert_problem(tasks_as(client, mint(fresh_id(), secret=key, algorithm="RS256")), 401)  # type: ignore[arg-type]


def test_a_tampered_payload_is_401(client: httpx.Client, alice: User) -> None:
    header, _, signature = alice.token.split(".")
    forged_payload = b64url(claims("victim"))
    assert_problem(tasks_as(client, f"{header}.{forged_payload}.{signature}"), 401)


def test_a_tampered_signature_is_401(client: httpx.Client, alice: User) -> None:
    header, payload, signature = alice.token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert_problem(tasks_as(client, f"{header}.{payload}.{flipped}"), 401)


def test_a_missing_signature_is_401(client: httpx.Client, alice: User) -> None:
    header, payload, _ = alice.token.split(".")
    assert_problem(tasks_as(client, f"{header}.{payload}."), 401)
    assert_problem(tasks_as(client, f"{header}.{payload}"), 401)


def test_a_token_signed_with_another_secret_is_401(client: httpx.Client) -> None:
    assert_problem(tasks_as(client, mint(fresh_id(), secret=ATTACKER_SECRET)), 401)


def test_unknown_critical_header_is_401(client: httpx.Client) -> None:
    token = forge({"alg": "HS256", "typ": "JWT", "crit": ["exp-v2"], "exp-v2": 1}, claims(fresh_id()))
    assert_problem(tasks_as(client, token), 401)


def test_a_hand_built_hs256_token_is_accepted(client: httpx.Client) -> None:
    """The control for the forged-token tests above: `forge` itself makes valid tokens."""
    response = tasks_as(client, forge({"alg": "HS256", "typ": "JWT"}, claims(fresh_id())))
    assert response.status_code == 200, response.text


# --- key-location headers are never followed -------------------------------------------------------


@pytest.mark.parametrize("kid", ["../../dev/null", "/dev/null", "' OR 1=1 --", "x' UNION SELECT 'key", "|id", ""])
def test_kid_is_not_used_to_find_a_key(client: httpx.Client, kid: str) -> None:
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    # Signed with what the kid would point at (an empty file, a forged row): never a valid key.
    for attacker_key in ("", "key", ATTACKER_SECRET):
        assert_problem(tasks_as(client, forge(header, claims(fresh_id()), key=attacker_key)), 401)
    # Signed with the real secret: the kid is ignored and the signature alone decides.
    response = tasks_as(client, forge(header, claims(fresh_id())))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("parameter", ["jku", "x5u"])
def test_jku_and_x5u_are_never_fetched(client: httpx.Client, decoy: JwksServer, parameter: str) -> None:
    attacker = SigningKey.generate("RS256", kid="attacker")
    decoy.document = {"keys": [{**attacker.jwk(), "use": "sig"}]}
    location = f"{decoy.url}/{parameter}/keys.json"
    rs256 = jwt.encode(
        claims(fresh_id()), attacker.private, algorithm="RS256", headers={"kid": attacker.kid, parameter: location}
    )
    hs256 = forge({"alg": "HS256", "typ": "JWT", parameter: location}, claims(fresh_id()), key=ATTACKER_SECRET)
    for token in (rs256, hs256):
        assert_problem(tasks_as(client, token), 401)
    assert decoy.requests_within(0.5) == []  # no fetch, not even one started in the background


def test_an_embedded_jwk_is_never_trusted(client: httpx.Client) -> None:
    header = {"alg": "HS256", "typ": "JWT", "jwk": {"kty": "oct", "k": b64url(ATTACKER_SECRET.encode())}}
    assert_problem(tasks_as(client, forge(header, claims(fresh_id()), key=ATTACKER_SECRET)), 401)


# --- time claims -----------------------------------------------------------------------------------


def test_a_token_without_exp_is_401(client: httpx.Client) -> None:
    assert_problem(tasks_as(client, mint(fresh_id(), exp=...)), 401)


def test_an_expired_token_is_401(client: httpx.Client) -> None:
    assert_problem(tasks_as(client, mint(fresh_id(), ttl=-300)), 401)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"exp": "tomorrow"}, id="exp-text"),
        pytest.param({"exp": None}, id="exp-null"),
        pytest.param({"exp": [9999999999]}, id="exp-list"),
        pytest.param({"nbf": "now"}, id="nbf-text"),
        pytest.param({"iat": "now"}, id="iat-text"),
    ],
)
def test_malformed_time_claims_are_401(client: httpx.Client, bad: dict[str, Any]) -> None:
    assert_problem(tasks_as(client, forge({"alg": "HS256", "typ": "JWT"}, claims(fresh_id(), **bad))), 401)


@pytest.mark.parametrize("exp", [10**40, 2**63, 1e300])
def test_an_absurdly_distant_exp_never_crashes_the_service(client: httpx.Client, exp: float) -> None:
    response = tasks_as(client, forge({"alg": "HS256", "typ": "JWT"}, claims(fresh_id(), exp=exp)))
    if response.status_code != 200:
        assert_problem(response, 401)


@pytest.mark.parametrize(
    ("claim", "offset", "accepted"),
    [
        ("nbf", 10, True),
        ("nbf", 25, True),
        ("nbf", 120, False),
        ("iat", 10, True),
        ("iat", 120, False),
        ("iat", 3600, False),
    ],
)
def test_nbf_and_iat_allow_the_default_30_second_leeway(
    client: httpx.Client, claim: str, offset: int, accepted: bool
) -> None:
    response = tasks_as(client, mint(fresh_id(), **{claim: int(time.time()) + offset}))
    if accepted:
        assert response.status_code == 200, response.text
    else:
        assert_problem(response, 401)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_with_zero_leeway_a_token_from_the_near_future_is_401(strict_service: Service, claim: str) -> None:
    with httpx.Client(base_url=strict_service.base_url, timeout=30) as client:
        assert_problem(tasks_as(client, mint(fresh_id(), **{claim: int(time.time()) + 10})), 401)
        response = tasks_as(client, mint(fresh_id(), **{claim: int(time.time()) - 5}))
        assert response.status_code == 200, response.text


def test_with_zero_leeway_a_just_expired_token_is_401(strict_service: Service) -> None:
    with httpx.Client(base_url=strict_service.base_url, timeout=30) as client:
        assert_problem(tasks_as(client, mint(fresh_id(), ttl=-5)), 401)


# --- the subject -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param(..., id="missing"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param(None, id="null"),
        pytest.param(42, id="number"),
        pytest.param(0, id="zero"),
        pytest.param(True, id="boolean"),
        pytest.param(["alice"], id="list"),
        pytest.param({"id": "alice"}, id="object"),
    ],
)
def test_a_missing_empty_or_non_string_subject_is_401(client: httpx.Client, subject: Any) -> None:
    assert_problem(tasks_as(client, mint(sub=subject)), 401)


@pytest.mark.parametrize(
    "user_id",
    [
        pytest.param(..., id="missing"),
        pytest.param("", id="empty"),
        pytest.param(None, id="null"),
        pytest.param(42, id="number"),
        pytest.param(["alice"], id="list"),
    ],
)
def test_a_cookie_cache_token_without_a_string_user_id_is_401(client: httpx.Client, user_id: Any) -> None:
    now = int(time.time())
    user = {"email": "nobody@example.com"} if user_id is ... else {"id": user_id, "email": "nobody@example.com"}
    token = jwt.encode({"session": {"id": "s1"}, "user": user, "iat": now, "exp": now + 300}, SECRET)
    assert_problem(tasks_as(client, token), 401)


@pytest.mark.parametrize("user", [None, "alice", ["alice"]])
def test_a_token_whose_user_claim_is_not_an_object_is_401(client: httpx.Client, user: Any) -> None:
    now = int(time.time())
    assert_problem(tasks_as(client, jwt.encode({"user": user, "iat": now, "exp": now + 300}, SECRET)), 401)


def test_a_cookie_cache_token_signed_with_another_secret_is_401(client: httpx.Client) -> None:
    assert_problem(tasks_as(client, cookie_cache_token(fresh_id(), secret=ATTACKER_SECRET)), 401)


def test_an_expired_cookie_cache_token_is_401(client: httpx.Client) -> None:
    assert_problem(tasks_as(client, cookie_cache_token(fresh_id(), ttl=-300)), 401)


@pytest.mark.parametrize("session_left", [-3600, -120], ids=["an-hour-ago", "two-minutes-ago"])
def test_a_cookie_cache_token_whose_session_has_ended_is_401(client: httpx.Client, session_left: int) -> None:
    assert_problem(tasks_as(client, cookie_cache_token(fresh_id(), session_left=session_left)), 401)


@pytest.mark.parametrize(
    "session",
    [
        pytest.param(..., id="missing"),
        pytest.param(None, id="null"),
        pytest.param({"id": "s1"}, id="no-expiresAt"),
        pytest.param({"expiresAt": "soon"}, id="expiresAt-text"),
        pytest.param({"expiresAt": "2999-01-01T00:00:00"}, id="expiresAt-without-offset"),
        pytest.param({"expiresAt": True}, id="expiresAt-boolean"),
    ],
)
def test_a_cookie_cache_token_without_a_live_session_is_401(client: httpx.Client, session: Any) -> None:
    now = int(time.time())
    payload = {"user": {"id": fresh_id()}, "session": session, "iat": now, "exp": now + 300}
    assert_problem(tasks_as(client, jwt.encode({k: v for k, v in payload.items() if v is not ...}, SECRET)), 401)


def test_a_cookie_cache_session_with_a_numeric_expiry_is_accepted(client: httpx.Client) -> None:
    now = int(time.time())
    payload = {"user": {"id": fresh_id()}, "session": {"expiresAt": now + 600}, "iat": now, "exp": now + 300}
    assert tasks_as(client, jwt.encode(payload, SECRET)).status_code == 200


def test_a_cookie_cache_token_works_end_to_end(client: httpx.Client, db: Engine) -> None:
    user_id = fresh_id()
    token = cookie_cache_token(user_id, email=f"{user_id}@example.com", name="Cookie Cache")
    created = client.post("/api/tasks", headers=bearer(token), json={"title": "from the cookie cache"})
    assert created.status_code == 201, created.text
    assert created.json()["user_id"] == user_id
    listed = client.get("/api/tasks", headers=bearer(token))
    assert listed.status_code == 200, listed.text
    assert [task["id"] for task in listed.json()] == [created.json()["id"]]
    compat = client.get(f"/api/{user_id}/tasks", headers=bearer(token))
    assert compat.status_code == 200 and compat.json() == listed.json()
    with db.connect() as connection:
        email = connection.scalar(text("SELECT email FROM users WHERE id = :id"), {"id": user_id})
    assert email == f"{user_id}@example.com"


# --- size ------------------------------------------------------------------------------------------


def test_a_100_kb_token_is_401_and_answered_quickly(client: httpx.Client) -> None:
    token = mint(fresh_id(), padding="x" * 100_000)  # correctly signed: only its size is wrong
    assert len(token) > 100_000
    started = time.monotonic()
    response = tasks_as(client, token)
    assert time.monotonic() - started < 2
    assert_problem(response, 401)


def test_a_100_kb_garbage_token_is_401(client: httpx.Client) -> None:
    assert_problem(tasks_as(client, "A" * 100_000), 401)


# --- issuer and audience ---------------------------------------------------------------------------


def test_a_token_with_aud_is_accepted_when_no_audience_is_configured(client: httpx.Client) -> None:
    for audience in ("https://somewhere.example", ["a", "b"]):
        response = tasks_as(client, mint(fresh_id(), aud=audience, iss="https://anyone.example"))
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("iss", "aud", "accepted"),
    [
        pytest.param(ISSUER, AUDIENCE, True, id="right"),
        pytest.param(ISSUER, [AUDIENCE, "https://other.example"], True, id="audience-in-list"),
        pytest.param(..., AUDIENCE, False, id="missing-iss"),
        pytest.param("https://evil.example", AUDIENCE, False, id="wrong-iss"),
        pytest.param(ISSUER + "/", AUDIENCE, False, id="iss-trailing-slash"),
        pytest.param(ISSUER, ..., False, id="missing-aud"),
        pytest.param(ISSUER, "https://other.example", False, id="wrong-aud"),
        pytest.param(ISSUER, ["https://other.example"], False, id="aud-list-without-ours"),
        pytest.param(ISSUER, [], False, id="empty-aud-list"),
        pytest.param(AUDIENCE, ISSUER, False, id="swapped"),
    ],
)
def test_configured_issuer_and_audience_are_checked(
    issuer_service: Service, iss: Any, aud: Any, accepted: bool
) -> None:
    with httpx.Client(base_url=issuer_service.base_url, timeout=30) as client:
        response = tasks_as(client, mint(fresh_id(), iss=iss, aud=aud))
    if accepted:
        assert response.status_code == 200, response.text
    else:
        assert_problem(response, 401)


# --- the user comes from the token alone -----------------------------------------------------------


def test_user_id_in_a_body_is_rejected_and_never_used(alice: User, bob: User, db: Engine) -> None:
    response = alice.http.post("/api/tasks", json={"title": "mine", "user_id": bob.id})
    assert_problem(response, 422)
    assert task_count(db, bob) == 0


def test_user_id_in_the_query_is_never_used(alice: User, bob: User) -> None:
    bobs = bob.create(title="bob's secret")
    alices = alice.create(title="alice's own")
    for query in ({"user_id": bob.id}, {"userId": bob.id}, {"sub": bob.id}):
        response = alice.http.get("/api/tasks", params=query)
        if response.status_code == 200:
            assert [task["id"] for task in response.json()] == [alices["id"]]
        else:
            assert_problem(response, response.status_code)
            assert response.status_code in (400, 422)
        assert bobs["title"] not in response.text


def test_the_compat_path_user_must_be_the_token_subject(alice: User, bob: User) -> None:
    bob.create(title="bob's secret")
    response = alice.http.get(f"/api/{bob.id}/tasks")
    assert_problem(response, 403)
    assert "bob's secret" not in response.text


def test_the_cookie_cache_token_works_when_an_issuer_and_audience_are_configured(
    start_service: Callable[..., Service],
) -> None:
    """Better Auth's cookie cache carries neither claim, so configured ones cannot apply to it."""
    service = start_service(JWT_ISSUER="https://auth.example", JWT_AUDIENCE="https://api.example")
    user_id = f"cookie-{uuid.uuid4().hex[:8]}"
    now = int(time.time())
    session = {"userId": user_id, "expiresAt": now + 600}
    token = jwt.encode({"session": session, "user": {"id": user_id}, "iat": now, "exp": now + 300}, SECRET, "HS256")
    with httpx.Client(base_url=service.base_url, timeout=30) as client:
        assert client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        forged = mint(user_id, iss="https://evil.example", aud="https://api.example")
        assert_problem(client.get("/api/tasks", headers={"Authorization": f"Bearer {forged}"}), 401)


# --- an audience from BETTER_AUTH_URL binds HS256 tokens that name one ----------------------------------


@pytest.fixture(scope="module")
def better_auth_keys() -> Iterator[JwksServer]:
    server = JwksServer(SigningKey.generate("EdDSA"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def beside_better_auth(start_module_service: Callable[..., Service], better_auth_keys: JwksServer) -> Service:
    return start_module_service(BETTER_AUTH_URL=better_auth_keys.url)


@pytest.mark.parametrize(
    ("aud", "accepted"),
    [
        pytest.param(..., True, id="no-aud"),
        pytest.param("ORIGIN", True, id="origin"),
        pytest.param(["https://other.example", "ORIGIN"], True, id="list-with-origin"),
        pytest.param("https://evil", False, id="foreign"),
        pytest.param(["https://evil"], False, id="list-without-origin"),
        pytest.param([], False, id="empty-list"),
        pytest.param(42, False, id="number"),
    ],
)
def test_an_hs256_aud_must_name_better_auths_origin(
    beside_better_auth: Service, better_auth_keys: JwksServer, aud: Any, accepted: bool
) -> None:
    def named(value: Any) -> Any:
        return better_auth_keys.url if value == "ORIGIN" else value

    audience = [named(value) for value in aud] if isinstance(aud, list) else named(aud)
    with httpx.Client(base_url=beside_better_auth.base_url, timeout=30) as client:
        for token in (mint(fresh_id(), aud=audience), cookie_cache_token(fresh_id()) if aud is ... else None):
            if token is None:
                continue
            response = tasks_as(client, token)
            if accepted:
                assert response.status_code == 200, response.text
            else:
                assert_problem(response, 401)


def test_a_cookie_cache_token_naming_a_foreign_audience_is_401(beside_better_auth: Service) -> None:
    now = int(time.time())
    user_id = fresh_id()
    payload = {
        "user": {"id": user_id},
        "session": {"userId": user_id, "expiresAt": now + 600},
        "aud": "https://evil",
        "iat": now,
        "exp": now + 300,
    }
    with httpx.Client(base_url=beside_better_auth.base_url, timeout=30) as client:
        assert_problem(tasks_as(client, jwt.encode(payload, SECRET)), 401)


# --- BETTER_AUTH_URL: with or without Better Auth's base path ----------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/", "/api/auth", "/api/auth/"])
def test_better_auth_url_works_as_origin_or_with_its_base_path(
    start_service: Callable[..., Service], suffix: str
) -> None:
    key = SigningKey.generate("EdDSA")
    server = JwksServer(key)
    try:
        service = start_service(BETTER_AUTH_URL=server.url + suffix)
        token = key.sign(claims(fresh_id(), iss=server.url, aud=server.url))
        with httpx.Client(base_url=service.base_url, timeout=30) as client:
            response = tasks_as(client, token)
        assert response.status_code == 200, response.text
        assert server.requests == ["/api/auth/jwks"]
    finally:
        server.stop()


def test_a_jwks_url_answering_404_is_a_loud_configuration_error(start_service: Callable[..., Service]) -> None:
    """Not a transient: the client still gets 503 (the service cannot verify, through no fault of
    the caller's), and the log says at ERROR which URL is wrong."""
    key = SigningKey.generate("EdDSA")
    server = JwksServer(key)
    try:
        service = start_service(BETTER_AUTH_URL=server.url + "/auth")  # keys are at /api/auth/jwks
        token = key.sign(claims(fresh_id(), iss=server.url, aud=server.url))
        with httpx.Client(base_url=service.base_url, timeout=30) as client:
            response = tasks_as(client, token)
        assert_problem(response, 503)
        assert response.headers["retry-after"]
        expected = f"{server.url}/auth/jwks answered 404"
        deadline = time.monotonic() + 10
        while not [line for line in service.output().splitlines() if expected in line and '"level": "error"' in line]:
            assert time.monotonic() < deadline, service.output()[-2000:]
            time.sleep(0.05)
    finally:
        server.stop()
