"""The real Better Auth (better-auth-server.mjs, on Node) signs two people up and hands out its tokens:
the service accepts both kinds, keeps each person's tasks apart, and accepts a token signed with a
rotated key without a restart. Its Node dependencies are installed from package-lock.json on demand.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest

from tests.support import npm, prerequisites, processes
from tests.support.problems import assert_problem
from tests.support.service import Service
from tests.support.tokens import SECRET

NODE_DIR = Path(__file__).resolve().parent
ROTATION_SECONDS = 4  # the jwt plugin's jwks.rotationInterval in better-auth-server.mjs
DEFAULT_REFRESH_SECONDS = 5  # JWT_JWKS_MIN_REFRESH_SECONDS, left at its default here
# Better Auth's session cookie cache; `__Secure-better-auth.session_data` when its base URL is https.
SESSION_DATA_COOKIE = "better-auth.session_data"


class BetterAuth(processes.LoggedProcess):
    """A running better-auth-server.mjs; `url` is its base URL (BETTER_AUTH_URL)."""

    def __init__(self, secret: str) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("BETTER_AUTH_", "AUTH_"))}
        env.update(BETTER_AUTH_SECRET=secret, ROTATION_SECONDS=str(ROTATION_SECONDS), NODE_ENV="development")
        super().__init__(
            [prerequisites.node(), "better-auth-server.mjs"], log_prefix="better-auth-", cwd=NODE_DIR, env=env
        )
        try:
            self.url = processes.wait_until_up(
                self.process, self._announced_url, name="better-auth-server.mjs", log=self.output, timeout=30
            )
        except RuntimeError:
            self.stop()
            raise

    def _announced_url(self) -> str | None:
        for line in self.output().splitlines():
            if line.startswith('{"url":'):
                return json.loads(line)["url"]
        return None


@dataclass
class Person:
    """Someone signed up with Better Auth: its user id and a browser-like session (cookies)."""

    id: str
    session: httpx.Client
    cookie_cache_jwt: str  # the session_data cookie set at sign-up

    def jwt(self) -> str:
        """A JWT plugin token, as a frontend gets one: GET /api/auth/token with the session cookie."""
        response = self.session.get("/api/auth/token")
        assert response.status_code == 200, response.text
        return response.json()["token"]


@pytest.fixture(scope="module")
def better_auth() -> Iterator[BetterAuth]:
    npm.install(NODE_DIR)  # `npm ci`, so that the README's single pytest command suffices
    server = BetterAuth(SECRET)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_service(start_module_service: Callable[..., Service], better_auth: BetterAuth) -> Service:
    """The service configured beside Better Auth: its URL and its secret, nothing else."""
    return start_module_service(BETTER_AUTH_URL=better_auth.url, BETTER_AUTH_SECRET=SECRET)


@pytest.fixture(scope="module")
def api(api_service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_service.base_url, timeout=10) as client:
        yield client


def sign_up(better_auth: BetterAuth, name: str) -> Iterator[Person]:
    with httpx.Client(base_url=better_auth.url, timeout=10) as session:
        email = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com"
        response = session.post(
            "/api/auth/sign-up/email", json={"email": email, "password": "correct horse battery", "name": name}
        )
        assert response.status_code == 200, response.text
        assert SESSION_DATA_COOKIE in response.cookies, response.headers.get_list("set-cookie")
        yield Person(response.json()["user"]["id"], session, response.cookies[SESSION_DATA_COOKIE])


@pytest.fixture(scope="module")
def alice(better_auth: BetterAuth) -> Iterator[Person]:
    yield from sign_up(better_auth, "Alice")


@pytest.fixture(scope="module")
def bob(better_auth: BetterAuth) -> Iterator[Person]:
    yield from sign_up(better_auth, "Bob")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_both_kinds_of_better_auth_token_are_accepted(api: httpx.Client, alice: Person, bob: Person) -> None:
    for person in (alice, bob):
        plugin_token, cookie_token = person.jwt(), person.cookie_cache_jwt
        assert jwt.get_unverified_header(plugin_token)["alg"] == "EdDSA"
        assert jwt.get_unverified_header(cookie_token)["alg"] == "HS256"
        for token in (plugin_token, cookie_token):
            response = api.get(f"/api/{person.id}/tasks", headers=bearer(token))  # 403 unless the subject is theirs
            assert response.status_code == 200, response.text


def test_the_jwt_from_get_session_is_accepted(api: httpx.Client, alice: Person) -> None:
    """The jwt plugin also hands the token out in the `set-auth-jwt` header of GET /api/auth/get-session."""
    token = alice.session.get("/api/auth/get-session").headers["set-auth-jwt"]
    response = api.get(f"/api/{alice.id}/tasks", headers=bearer(token))
    assert response.status_code == 200, response.text


def test_each_better_auth_user_sees_only_their_own_tasks(api: httpx.Client, alice: Person, bob: Person) -> None:
    alices = api.post("/api/tasks", headers=bearer(alice.jwt()), json={"title": "alice's secret"})
    bobs = api.post("/api/tasks", headers=bearer(bob.cookie_cache_jwt), json={"title": "bob's secret"})
    assert alices.status_code == bobs.status_code == 201, (alices.text, bobs.text)
    assert (alices.json()["user_id"], bobs.json()["user_id"]) == (alice.id, bob.id)
    for token, own in ((alice.cookie_cache_jwt, alices), (bob.jwt(), bobs)):
        listed = api.get("/api/tasks", headers=bearer(token))
        assert [task["id"] for task in listed.json()] == [own.json()["id"]]
    bobs_id = bobs.json()["id"]
    assert_problem(api.get(f"/api/tasks/{bobs_id}", headers=bearer(alice.jwt())), 404)
    assert_problem(api.delete(f"/api/tasks/{bobs_id}", headers=bearer(alice.cookie_cache_jwt)), 404)
    assert_problem(api.get(f"/api/{bob.id}/tasks", headers=bearer(alice.jwt())), 403)
    assert api.get(f"/api/tasks/{bobs_id}", headers=bearer(bob.jwt())).status_code == 200


def test_a_rotated_key_is_accepted_by_the_running_service(
    api: httpx.Client, api_service: Service, better_auth: BetterAuth, alice: Person
) -> None:
    old_token = alice.jwt()
    assert api.get("/api/tasks", headers=bearer(old_token)).status_code == 200  # its key is cached now
    old_kid = jwt.get_unverified_header(old_token)["kid"]

    # Better Auth replaces a key older than its rotation interval when it next signs.
    deadline = time.monotonic() + ROTATION_SECONDS + 10
    while (new_kid := jwt.get_unverified_header(new_token := alice.jwt())["kid"]) == old_kid:
        assert time.monotonic() < deadline, "Better Auth did not rotate its key"
        time.sleep(0.25)
    published = {key["kid"] for key in httpx.get(better_auth.url + "/api/auth/jwks").json()["keys"]}
    assert {old_kid, new_kid} <= published  # the old key stays published for its grace period

    rotated = time.monotonic()
    while (response := api.get("/api/tasks", headers=bearer(new_token))).status_code != 200:
        assert_problem(response, 401)  # at worst refused until the next allowed refetch, never a 500 or 503
        assert time.monotonic() - rotated < DEFAULT_REFRESH_SECONDS + 3, "the rotated key was never accepted"
        time.sleep(0.1)
    assert api_service.process.poll() is None  # the same process, never restarted
    assert api.get("/api/tasks", headers=bearer(old_token)).status_code == 200
