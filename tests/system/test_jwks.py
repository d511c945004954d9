"""Better Auth's JWT plugin tokens, checked against a JWKS we serve ourselves (RFC 8725, OWASP API2):
every attack is a 401 problem, every genuine key type is accepted, a flood of random `kid`s costs
at most one fetch per interval, a new key is picked up within that interval, and an unreachable
JWKS is a 503 (or, with keys cached, nothing at all) — never a 500.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.jwks import JWKS_PATH, JwksServer, SigningKey, b64url, hand_signed
from tests.support.problems import assert_problem
from tests.support.service import Service, raw_get
from tests.support.tokens import mint

DEFAULT_REFRESH_SECONDS = 5
ED, EC, RS, PS = (SigningKey.generate(alg) for alg in ("EdDSA", "ES256", "RS256", "PS256"))
ATTACKER_ED, ATTACKER_RS = SigningKey.generate("EdDSA"), SigningKey.generate("RS256")  # never published


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    server = JwksServer(ED, EC, RS, PS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def decoy() -> Iterator[JwksServer]:
    """Where a `jku` or `x5u` points: it serves the attacker's key, and must never be asked."""
    server = JwksServer(ATTACKER_ED, ATTACKER_RS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def service(start_module_service: Callable[..., Service], jwks: JwksServer) -> Service:
    """Configured as beside a Better Auth server: its URL (JWKS, issuer, audience) and its secret."""
    return start_module_service(BETTER_AUTH_URL=jwks.url)


@pytest.fixture(scope="module")
def jwks_only(start_module_service: Callable[..., Service], jwks: JwksServer) -> Service:
    """No shared secret at all: only the JWKS can vouch for a token."""
    return start_module_service(BETTER_AUTH_URL=jwks.url, BETTER_AUTH_SECRET="")


def fresh_id() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def claims(origin: str, **overrides: Any) -> dict[str, Any]:
    """What Better Auth's JWT plugin puts in a token (`...` leaves a claim out)."""
    now = int(time.time())
    payload = {"sub": fresh_id(), "iat": now, "exp": now + 900, "iss": origin, "aud": origin, **overrides}
    return {name: value for name, value in payload.items() if value is not ...}


def with_payload(token: str, payload: dict[str, Any]) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{b64url(json.dumps(payload).encode())}.{signature}"


# One connection pool for the whole module: each new httpx.Client costs ~70 ms (its TLS context).
api = httpx.Client(timeout=10)


@pytest.fixture(scope="module", autouse=True)
def _close_api() -> Iterator[None]:
    yield
    api.close()


def tasks_as(service: Service, token: str) -> httpx.Response:
    return api.get(f"{service.base_url}/api/tasks", headers={"Authorization": f"Bearer {token}"})


def public_key_secrets(key: SigningKey) -> dict[str, bytes]:
    """Everything about a public key an attacker could try as an HS256 secret."""
    public = key.private.public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk = key.jwk()
    coordinate = base64.urlsafe_b64decode(jwk.get("x", jwk.get("n")) + "==")  # Ed25519: the raw public key
    return {
        "pem": key.pem(),
        "pem-stripped": key.pem().strip(),
        "der": der,
        "jwk-json": json.dumps(jwk).encode(),
        "jwk-coordinate": coordinate,
    }


# --- the Authorization header ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}, id="basic-scheme"),
        pytest.param({"Authorization": "Bearer"}, id="bearer-without-token"),
        pytest.param({"Authorization": "Bearer garbage"}, id="garbage"),
        pytest.param({"Authorization": "Bearer eyJhbGciOiJFZERTQSJ9.e30.AAAA"}, id="eddsa-garbage"),
    ],
)
def test_a_missing_or_malformed_authorization_is_401(service: Service, headers: dict[str, str]) -> None:
    assert_problem(api.get(f"{service.base_url}/api/tasks", headers=headers), 401)


def test_an_empty_bearer_token_is_401(service: Service) -> None:
    assert_problem(raw_get(service, "/api/tasks", {"Authorization": "Bearer "}), 401)


# --- forged, tampered and mis-claimed tokens -----------------------------------------------------------

ATTACKS: dict[str, Callable[[str], str]] = {
    "alg-none": lambda origin: hand_signed({"alg": "none", "kid": ED.kid}, claims(origin), None),
    "alg-none-with-a-real-signature": lambda origin: (
        hand_signed({"alg": "none", "kid": ED.kid}, claims(origin), None) + ED.sign(claims(origin)).rsplit(".", 1)[1]
    ),
    "alg-NONE": lambda origin: hand_signed({"alg": "NONE", "typ": "JWT"}, claims(origin), None),
    "header-nested-5000-deep": lambda origin: b64url(b"[" * 5000) + ".e30.AAAA",
    "tampered-payload": lambda origin: with_payload(ED.sign(claims(origin)), claims(origin, sub="victim")),
    "tampered-signature": lambda origin: ED.sign(claims(origin))[:-6] + "AAAAAA",
    "eddsa-known-kid-other-key": lambda origin: ATTACKER_ED.sign(claims(origin), kid=ED.kid),
    "eddsa-unknown-kid": lambda origin: ATTACKER_ED.sign(claims(origin)),
    "eddsa-no-kid-other-key": lambda origin: ATTACKER_ED.sign(claims(origin), kid=None),
    "rs256-known-kid-other-key": lambda origin: ATTACKER_RS.sign(claims(origin), kid=RS.kid),
    "rs256-unknown-kid": lambda origin: ATTACKER_RS.sign(claims(origin)),
    "kid-path-traversal": lambda origin: ATTACKER_ED.sign(claims(origin), kid="../../dev/null"),
    "kid-sql-injection": lambda origin: ATTACKER_ED.sign(claims(origin), kid="' OR 1=1 --"),
    "kid-path-traversal-hs256-empty-key": lambda origin: hand_signed(
        {"alg": "HS256", "kid": "../../dev/null"}, claims(origin), b""
    ),
    "kid-sql-injection-hs256": lambda origin: hand_signed({"alg": "HS256", "kid": "' OR 1=1 --"}, claims(origin), b"1"),
    "kid-not-a-string": lambda origin: ATTACKER_ED.sign(claims(origin), kid=["x"]),
    "embedded-jwk": lambda origin: ATTACKER_ED.sign(claims(origin), jwk=ATTACKER_ED.jwk()),
    "ps256-with-an-rs256-key": lambda origin: RS.sign(claims(origin), alg="PS256"),
    "rs512-with-an-rs256-key": lambda origin: RS.sign(claims(origin), alg="RS512"),
    "eddsa-kid-on-an-es256-token": lambda origin: EC.sign(claims(origin), kid=ED.kid),
    "unknown-crit": lambda origin: ED.sign(claims(origin), crit=["exp-v2"], **{"exp-v2": 1}),
    "missing-exp": lambda origin: ED.sign(claims(origin, exp=...)),
    "expired": lambda origin: ED.sign(claims(origin, exp=int(time.time()) - 120)),
    "exp-not-a-number": lambda origin: ED.sign(claims(origin, exp="tomorrow")),
    "nbf-beyond-leeway": lambda origin: ED.sign(claims(origin, nbf=int(time.time()) + 120)),
    "iat-beyond-leeway": lambda origin: ED.sign(claims(origin, iat=int(time.time()) + 120)),
    "wrong-iss": lambda origin: ED.sign(claims(origin, iss="https://evil.example")),
    "iss-with-a-path": lambda origin: ED.sign(claims(origin, iss=origin + "/api/auth")),
    "missing-iss": lambda origin: ED.sign(claims(origin, iss=...)),
    "wrong-aud": lambda origin: ED.sign(claims(origin, aud="https://other.example")),
    "aud-list-without-ours": lambda origin: ED.sign(claims(origin, aud=["https://other.example"])),
    "missing-aud": lambda origin: ED.sign(claims(origin, aud=...)),
    "missing-sub": lambda origin: ED.sign(claims(origin, sub=...)),
    "empty-sub": lambda origin: ED.sign(claims(origin, sub="")),
    "blank-sub": lambda origin: ED.sign(claims(origin, sub="   ")),
    "null-sub": lambda origin: ED.sign(claims(origin, sub=None)),
    "numeric-sub": lambda origin: ED.sign(claims(origin, sub=42)),
    "list-sub": lambda origin: ED.sign(claims(origin, sub=["alice"])),
    "object-sub": lambda origin: ED.sign(claims(origin, sub={"id": "alice"})),
}


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_every_forged_or_mis_claimed_token_is_401(service: Service, jwks: JwksServer, attack: Callable) -> None:
    assert_problem(tasks_as(service, attack(jwks.url)), 401)


@pytest.mark.parametrize("key", [ED, EC, RS, PS], ids=lambda key: key.alg)
@pytest.mark.parametrize("form", ["pem", "pem-stripped", "der", "jwk-json", "jwk-coordinate"])
def test_hs256_signed_with_a_published_public_key_is_401(
    service: Service, jwks_only: Service, jwks: JwksServer, key: SigningKey, form: str
) -> None:
    secret = public_key_secrets(key)[form]
    for header in ({"alg": "HS256", "kid": key.kid}, {"alg": "HS256", "typ": "JWT"}):
        token = hand_signed(header, claims(jwks.url), secret)
        assert_problem(tasks_as(service, token), 401)
        assert_problem(tasks_as(jwks_only, token), 401)


@pytest.mark.parametrize("parameter", ["jku", "x5u"])
def test_jku_and_x5u_are_never_followed(service: Service, jwks: JwksServer, decoy: JwksServer, parameter: str) -> None:
    location = decoy.url + JWKS_PATH
    for kid in (ATTACKER_ED.kid, ED.kid):
        assert_problem(tasks_as(service, ATTACKER_ED.sign(claims(jwks.url), kid=kid, **{parameter: location})), 401)
    assert decoy.requests_within(0.5) == []  # no fetch, not even one started in the background


def test_a_100_kb_token_is_401_at_once_and_fetches_nothing(service: Service, jwks: JwksServer) -> None:
    before = jwks.fetches()
    token = ED.sign(claims(jwks.url, padding="x" * 100_000), kid=uuid.uuid4().hex)  # an unknown kid, if it got that far
    assert_problem(tasks_as(service, token), 401)
    assert jwks.fetches() == before  # refused before any key lookup


# --- genuine tokens ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [ED, EC, RS, PS], ids=lambda key: key.alg)
def test_a_token_from_each_published_key_type_is_accepted(service: Service, jwks: JwksServer, key: SigningKey) -> None:
    user = fresh_id()
    headers = {"Authorization": f"Bearer {key.sign(claims(jwks.url, sub=user, email=f'{user}@example.com'))}"}
    created = api.post(f"{service.base_url}/api/tasks", headers=headers, json={"title": key.alg})
    assert created.status_code == 201, created.text
    assert created.json()["user_id"] == user
    listed = api.get(f"{service.base_url}/api/tasks", headers=headers)
    assert [task["title"] for task in listed.json()] == [key.alg]


def test_an_audience_list_that_includes_ours_is_accepted(service: Service, jwks: JwksServer) -> None:
    response = tasks_as(service, ED.sign(claims(jwks.url, aud=["https://other.example", jwks.url])))
    assert response.status_code == 200, response.text


def test_hs256_with_the_shared_secret_keeps_working_beside_the_jwks(service: Service, jwks_only: Service) -> None:
    token = mint(fresh_id())
    response = tasks_as(service, token)
    assert response.status_code == 200, response.text
    assert_problem(tasks_as(jwks_only, token), 401)  # and without a secret, nothing else can vouch for it


# --- the key cache -------------------------------------------------------------------------------------


def test_a_flood_of_random_kids_costs_at_most_one_fetch_per_interval(service: Service, jwks: JwksServer) -> None:
    assert tasks_as(service, ED.sign(claims(jwks.url))).status_code == 200  # the keys are cached
    tokens = [ATTACKER_ED.sign(claims(jwks.url), kid=uuid.uuid4().hex) for _ in range(200)]
    before, started = jwks.fetches(), time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda token: tasks_as(service, token).status_code, tokens))
    elapsed = time.monotonic() - started
    assert statuses == [401] * 200
    fetches = jwks.fetches() - before
    assert fetches <= 1 + elapsed // DEFAULT_REFRESH_SECONDS, f"{fetches} JWKS fetches in {elapsed:.1f}s"
    assert tasks_as(service, ED.sign(claims(jwks.url))).status_code == 200


@pytest.fixture
def refreshing_every_second(start_service: Callable[..., Service]) -> Iterator[tuple[JwksServer, Service]]:
    server = JwksServer()
    service = start_service(BETTER_AUTH_URL=server.url, BETTER_AUTH_SECRET="", JWT_JWKS_MIN_REFRESH_SECONDS="1")
    yield server, service
    server.stop()


def test_a_newly_published_key_is_accepted_within_the_refresh_interval(
    refreshing_every_second: tuple[JwksServer, Service],
) -> None:
    server, service = refreshing_every_second
    old, new = SigningKey.generate("EdDSA"), SigningKey.generate("EdDSA")
    server.publish(old)
    assert tasks_as(service, old.sign(claims(server.url))).status_code == 200
    token = new.sign(claims(server.url))
    assert_problem(tasks_as(service, token), 401)  # not published yet: the miss has just fetched
    server.publish(old, new)
    published, before = time.monotonic(), server.fetches()
    # The deadline: the 1 s refresh interval, and room for a loaded machine.
    while (response := tasks_as(service, token)).status_code != 200 and time.monotonic() - published < 4:
        assert_problem(response, 401)
        time.sleep(0.05)
    waited = time.monotonic() - published
    assert response.status_code == 200, f"the new key was still refused after {waited:.1f}s"
    assert server.fetches() - before <= 2  # polling every 50 ms did not fetch every 50 ms
    assert tasks_as(service, old.sign(claims(server.url))).status_code == 200


def test_cached_keys_keep_working_while_the_jwks_is_down(start_service: Callable[..., Service]) -> None:
    key = SigningKey.generate("EdDSA")
    server = JwksServer(key)
    service = start_service(BETTER_AUTH_URL=server.url, JWT_JWKS_MIN_REFRESH_SECONDS="1")
    try:
        assert tasks_as(service, key.sign(claims(server.url))).status_code == 200
        server.stop()
        time.sleep(1.1)  # the wait is the point: past the 1 s interval, the next unknown kid may fetch (and fails)
        assert_problem(tasks_as(service, ATTACKER_ED.sign(claims(server.url))), 401)
        for _ in range(3):
            response = tasks_as(service, key.sign(claims(server.url)))
            assert response.status_code == 200, response.text
    finally:
        service.stop()


def test_a_jwks_down_from_the_start_is_503_with_retry_after(start_service: Callable[..., Service]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        origin = f"http://127.0.0.1:{closed.getsockname()[1]}"  # nothing listens here once closed
    service = start_service(BETTER_AUTH_URL=origin)
    try:
        for _ in range(2):  # the first attempt, then the throttled retry
            response = tasks_as(service, ED.sign(claims(origin)))
            assert_problem(response, 503)
            assert int(response.headers["retry-after"]) > 0
        assert tasks_as(service, mint(fresh_id())).status_code == 200  # the shared secret needs no JWKS
    finally:
        service.stop()


def test_a_hanging_jwks_holds_up_no_other_request(start_service: Callable[..., Service]) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        origin = f"http://127.0.0.1:{silent.getsockname()[1]}"
        service = start_service(BETTER_AUTH_URL=origin)
        try:
            with ThreadPoolExecutor(1) as pool:
                waiting = pool.submit(tasks_as, service, ED.sign(claims(origin)))
                silent.settimeout(10)
                fetch, _ = silent.accept()  # its JWKS fetch is in flight now, and stays unanswered
                with fetch:
                    for _ in range(5):
                        assert api.get(service.base_url + "/health").status_code == 200
                        assert tasks_as(service, mint(fresh_id())).status_code == 200
                    assert not waiting.done(), "the others were answered only once the fetch had ended"
                    response = waiting.result(timeout=15)  # the fetch gives up after its own deadline
            assert_problem(response, 503)
        finally:
            service.stop()


# --- a broken JWKS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fickle_jwks(start_module_service: Callable[..., Service]) -> Iterator[tuple[JwksServer, Service]]:
    server = JwksServer()
    service = start_module_service(BETTER_AUTH_URL=server.url, JWT_JWKS_MIN_REFRESH_SECONDS="0")
    yield server, service
    server.stop()


@pytest.fixture
def fickle(fickle_jwks: tuple[JwksServer, Service]) -> tuple[JwksServer, Service]:
    """A JWKS whose answer each test sets, refetched on every miss, and no key cached to fall back on."""
    server, service = fickle_jwks
    server.document, server.status, server.headers = {"keys": []}, 200, {}
    unknown_kid = ATTACKER_ED.sign(claims(server.url), kid=uuid.uuid4().hex)
    assert_problem(tasks_as(service, unknown_kid), 503)  # fetched an empty set: nothing is cached now
    return server, service


BROKEN_JWKS: dict[str, Any] = {
    "not-json": b"<html>gateway timeout</html>",
    "nested-100k-deep": b"[" * 100_000,
    "larger-than-256-kb": json.dumps({"keys": [ED.jwk()], "padding": "x" * 300_000}).encode(),
    "keys-not-a-list": {"keys": "ED"},
    "a-list": [ED.jwk()],
    "no-keys": {"keys": []},
    "key-fields-not-strings": {"keys": [{**ED.jwk(), "kty": ["OKP"]}, {**ED.jwk(), "crv": {}}, {**ED.jwk(), "alg": 1}]},
    "encryption-key": {"keys": [{**ED.jwk(), "use": "enc"}]},
    "symmetric-key": {"keys": [{"kty": "oct", "k": b64url(b"k" * 32), "kid": ED.kid, "alg": "HS256"}]},
    "curve-mismatch": {"keys": [{**EC.jwk(), "kid": ED.kid, "alg": "EdDSA"}]},
    "rsa-without-modulus": {"keys": [{"kty": "RSA", "e": "AQAB", "kid": ED.kid}]},
    "rsa-bad-base64": {"keys": [{"kty": "RSA", "n": "!!!", "e": "AQAB", "kid": ED.kid}]},
}


@pytest.mark.parametrize("document", BROKEN_JWKS.values(), ids=BROKEN_JWKS.keys())
def test_a_jwks_without_a_usable_key_is_503_never_500(fickle: tuple[JwksServer, Service], document: Any) -> None:
    server, service = fickle
    server.document = document
    response = tasks_as(service, ED.sign(claims(server.url)))
    assert_problem(response, 503)
    assert "retry-after" in response.headers


def test_a_jwks_redirect_is_not_followed(fickle: tuple[JwksServer, Service], decoy: JwksServer) -> None:
    server, service = fickle
    server.status, server.headers = 302, {"Location": decoy.url + JWKS_PATH}
    assert_problem(tasks_as(service, ATTACKER_ED.sign(claims(server.url))), 503)
    assert decoy.requests == []


def test_a_repaired_jwks_is_used_at_once(fickle: tuple[JwksServer, Service]) -> None:
    server, service = fickle
    server.document = b"not json"
    assert_problem(tasks_as(service, ED.sign(claims(server.url))), 503)
    server.publish(ED)
    response = tasks_as(service, ED.sign(claims(server.url)))
    assert response.status_code == 200, response.text
