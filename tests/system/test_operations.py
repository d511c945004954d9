"""Running the service: probes, restarts, the published contract, CORS, and riding out a database outage."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml
from sqlalchemy import Engine, create_engine, make_url, text

from persistence import schema
from persistence.database import Database
from tests.support import ROOT
from tests.support.clusters import HEAD, SCRIPTS, stop, throwaway_cluster
from tests.support.metrics import scrape, total
from tests.support.problems import assert_unavailable
from tests.support.service import Service, fresh_database, running, service_env
from tests.support.tokens import mint

PROMPT_SECONDS = 10  # the longest any single answer may take, outage or not
ORIGINS = ("https://app.example", "https://admin.example")
UNLISTED_ORIGIN = "https://evil.example"


def client_for(service: Service, subject: str | None = None) -> httpx.Client:
    """A client with a short timeout, carrying `subject`'s token when given."""
    headers = {"Authorization": f"Bearer {mint(subject)}"} if subject else {}
    return httpx.Client(base_url=service.base_url, headers=headers, timeout=PROMPT_SECONDS)


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,content-type",
    }


def cors_headers(response: httpx.Response) -> list[str]:
    return [name for name in response.headers if name.lower().startswith("access-control-")]


def assert_errors_are_problems(response: httpx.Response) -> None:
    """A refused preflight is still an error, and every error is problem+json."""
    if not response.is_success:
        assert response.headers.get("content-type", "").startswith("application/problem+json"), (
            response.status_code,
            response.headers.get("content-type"),
            response.text,
        )


def header_list(response: httpx.Response, name: str) -> set[str]:
    return {item.strip().lower() for item in response.headers.get(name, "").split(",") if item.strip()}


# -- probes ---------------------------------------------------------------------------------------


def test_health_is_200_without_a_token(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200, response.text


def test_ready_is_200_when_the_database_answers_at_the_newest_migration(client: httpx.Client) -> None:
    response = client.get("/ready")
    assert response.status_code == 200, response.text


def test_an_unreachable_database_is_a_prompt_503_with_retry_after(database_url: str) -> None:
    env = service_env(database_url, DATABASE_URL="postgresql://todo@127.0.0.1:1/todo")
    with running(env) as service, client_for(service, new_user()) as http:
        assert_unavailable(http.get("/ready"))
        assert_unavailable(http.get("/api/tasks"))
        assert_unavailable(http.post("/api/tasks", json={"title": "nowhere to go"}))
        assert service.process.poll() is None


@pytest.mark.parametrize(
    "revision",
    sorted({None, "0001", SCRIPTS.get_revision(HEAD).down_revision}, key=str),
    ids=lambda revision: f"at-{revision or 'nothing'}",
)
def test_ready_is_503_while_the_schema_is_behind_the_newest_migration(db: Engine, revision: str | None) -> None:
    with fresh_database(db) as url:
        if revision is not None:
            schema.migrate(url, revision)
        with running(service_env(url)) as service, client_for(service) as http:
            assert_unavailable(http.get("/ready"))
            schema.migrate(url)
            assert http.get("/ready").status_code == 200


# -- the database server's time zone --------------------------------------------------------------


def test_instants_are_answered_in_utc_whatever_the_database_servers_time_zone(db: Engine) -> None:
    with fresh_database(db) as url:
        with db.execution_options(isolation_level="AUTOCOMMIT").connect() as connection:
            # Half an hour off UTC: no whole-hour slip can pass for right.
            connection.execute(text(f"ALTER DATABASE \"{make_url(url).database}\" SET TimeZone TO 'America/St_Johns'"))
        schema.migrate(url)
        with running(service_env(url)) as service, client_for(service, new_user()) as http:
            created = http.post("/api/tasks", json={"title": "in UTC", "due_date": "2026-12-02T18:00:00Z"})
            assert created.status_code == 201, created.text
            fetched = http.get(created.headers["location"]).json()
            listed = http.get("/api/tasks").json()
        for task in (created.json(), fetched, *listed):
            assert task["due_date"] == "2026-12-02T18:00:00Z"
            assert task["created_at"].endswith("Z") and task["updated_at"].endswith("Z")
        assert asyncio.run(_session_time_zone(url)) == "UTC"  # psycopg's fast path, not a conversion


async def _session_time_zone(url: str) -> str:
    """The time zone of the sessions the service's pool opens on `url`."""
    db = Database(url, pool_size=1)
    await db.open()
    try:
        rows = await db.run(None, "SELECT current_setting('TimeZone') AS zone", {})
        return str(rows[0]["zone"])
    finally:
        await db.close()


# -- restarts -------------------------------------------------------------------------------------


def test_tasks_survive_a_restart_of_the_service(database_url: str) -> None:
    user = new_user()
    with running(service_env(database_url)) as first, client_for(first, user) as http:
        created = http.post("/api/tasks", json={"title": "outlives the process", "tags": ["durable"]})
        assert created.status_code == 201, created.text
    assert first.process.poll() is not None

    with running(service_env(database_url)) as second, client_for(second, user) as http:
        fetched = http.get(created.headers["location"])
        assert fetched.status_code == 200, fetched.text
        assert fetched.json() == created.json()


# -- the published contract -----------------------------------------------------------------------


def test_swagger_ui_is_served_at_api_ui(client: httpx.Client) -> None:
    response = client.get("/api/ui/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in response.text


@pytest.mark.parametrize(("path", "location"), [("/api/ui", "/api/ui/"), ("/api/openapi.json/", "/api/openapi.json")])
def test_the_ui_and_the_contract_are_found_with_a_slash_too_few_or_too_many(
    client: httpx.Client, path: str, location: str
) -> None:
    response = client.get(path)
    assert response.status_code == 307
    assert response.headers["location"] == location


def test_the_contract_is_served_as_yaml_too(client: httpx.Client) -> None:
    response = client.get("/api/openapi.yaml")
    assert response.status_code == 200
    assert (
        yaml.safe_load(response.text)["paths"].keys()
        == yaml.safe_load((ROOT / "openapi.yaml").read_text())["paths"].keys()
    )


def test_the_contract_is_served_at_api_openapi_json_with_every_operation(client: httpx.Client) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    served = response.json()["paths"]
    written = yaml.safe_load((ROOT / "openapi.yaml").read_text())["paths"]
    assert served.keys() == written.keys()
    assert {path: item.keys() for path, item in served.items()} == {path: item.keys() for path, item in written.items()}


# -- CORS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cors_service(database_url: str) -> Iterator[Service]:
    with running(service_env(database_url, CORS_ORIGINS=", ".join(ORIGINS))) as service:
        yield service


@pytest.mark.parametrize("origin", ORIGINS)
@pytest.mark.parametrize(("method", "path"), [("POST", "/api/tasks"), ("PATCH", "/api/tasks/1")])
def test_a_preflight_from_a_listed_origin_is_allowed_without_a_token(
    cors_service: Service, origin: str, method: str, path: str
) -> None:
    with client_for(cors_service) as http:
        response = http.options(path, headers=preflight(origin, method))
    assert response.status_code in {200, 204}, response.text
    assert response.headers["access-control-allow-origin"] == origin
    assert {"authorization", "content-type"} <= header_list(response, "access-control-allow-headers")
    assert method.lower() in header_list(response, "access-control-allow-methods")


def test_a_preflight_allows_every_request_header_the_contract_declares(cors_service: Service) -> None:
    contract = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    declared = {p["name"].lower() for p in contract["components"]["parameters"].values() if p["in"] == "header"}
    assert {"if-match", "if-none-match", "idempotency-key"} <= declared
    wanted = declared | {"authorization", "content-type", "x-request-id"}
    headers = {**preflight(ORIGINS[0], "PATCH"), "Access-Control-Request-Headers": ",".join(sorted(wanted))}
    with client_for(cors_service) as http:
        response = http.options("/api/tasks/1", headers=headers)
    assert response.status_code in {200, 204}, response.text
    assert wanted <= header_list(response, "access-control-allow-headers")


@pytest.mark.parametrize("origin", ORIGINS)
def test_a_listed_origin_may_read_location_etag_link_and_retry_after(cors_service: Service, origin: str) -> None:
    with client_for(cors_service, new_user()) as http:
        created = http.post("/api/tasks", json={"title": "from the browser"}, headers={"Origin": origin})
        listed = http.get("/api/tasks", headers={"Origin": origin})
    for response in (created, listed):
        assert response.status_code in {200, 201}, response.text
        assert response.headers["access-control-allow-origin"] == origin
        # Retry-After: a page backs off as a 429 (a stream too many) or a 503 asks.
        assert {"location", "etag", "link", "retry-after"} <= header_list(response, "access-control-expose-headers")


def test_an_unlisted_origin_is_not_allowed(cors_service: Service) -> None:
    with client_for(cors_service, new_user()) as http:
        answered = [
            http.options("/api/tasks", headers=preflight(UNLISTED_ORIGIN)),
            http.get("/api/tasks", headers={"Origin": UNLISTED_ORIGIN}),
        ]
    for response in answered:
        assert "access-control-allow-origin" not in response.headers
        assert_errors_are_problems(response)


def test_without_cors_origins_there_are_no_cors_headers_at_all(service: Service) -> None:
    with client_for(service, new_user()) as http:
        answered = [
            http.options("/api/tasks", headers=preflight(ORIGINS[0])),
            http.get("/api/tasks", headers={"Origin": ORIGINS[0]}),
        ]
    for response in answered:
        assert cors_headers(response) == []
        assert_errors_are_problems(response)


# -- a database outage ----------------------------------------------------------------------------


def test_a_database_outage_is_503_and_the_same_process_recovers_by_itself() -> None:
    user = new_user()
    with throwaway_cluster() as (url, cluster):
        schema.migrate(url)
        with running(service_env(url)) as service, client_for(service, user) as http:
            created = http.post("/api/tasks", json={"title": "before the outage"})
            assert created.status_code == 201, created.text
            task = created.headers["location"]

            stop(cluster)
            assert_unavailable(http.get(task))
            assert_unavailable(http.get("/api/tasks"))
            assert_unavailable(http.patch(task, json={"completed": True}))
            assert_unavailable(http.post("/api/tasks", json={"title": "during the outage"}))
            assert_unavailable(http.get("/ready"))
            assert http.get("/health").status_code == 200

            cluster.ensure_postgres_running()
            assert cluster.get_uri().replace("postgresql://", "postgresql+psycopg://", 1) == url
            deadline = time.monotonic() + 10
            while (fetched := http.get(task)).status_code != 200 and time.monotonic() < deadline:
                assert_unavailable(fetched)
                time.sleep(0.2)
            assert fetched.status_code == 200, fetched.text
            assert fetched.json() == created.json()
            assert http.get("/ready").status_code == 200
            assert http.post("/api/tasks", json={"title": "after the outage"}).status_code == 201
            assert service.process.poll() is None


def test_after_a_storm_of_killed_connections_the_pool_is_back_to_its_working_size_within_a_minute() -> None:
    """Replacing killed connections under load swells the pool; idle ones are closed again
    (psycopg_pool's max_idle), so it returns to what its clients need (issue 23, point 10)."""
    with throwaway_cluster() as (url, _), ThreadPoolExecutor(CLIENTS) as pool:
        schema.migrate(url)
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with running(service_env(url)) as service:
            calm = threading.Event()
            statuses: Counter[int] = Counter()

            def lists() -> None:
                with client_for(service, new_user()) as http:
                    while not calm.is_set():
                        statuses[http.get("/api/tasks").status_code] += 1

            clients = [pool.submit(lists) for _ in range(CLIENTS)]
            working = max(pool_size(service) for _ in sampled(3))
            storm_until = time.monotonic() + STORM_SECONDS
            killed = 0
            while time.monotonic() < storm_until:
                with admin.connect() as connection:
                    killed += len(connection.execute(text(TERMINATE_SERVICE_BACKENDS)).all())
            swollen = pool_size(service)
            started = time.monotonic()
            while (size := pool_size(service)) > working + 2:
                assert time.monotonic() - started < 60, f"the pool stays at {size} connections (working size {working})"
                time.sleep(0.5)
            print(
                f"\npool: {working} connections for {CLIENTS} clients; {killed} backends killed over {STORM_SECONDS} s "
                f"left {swollen}; back to {size} in {time.monotonic() - started:.0f} s; answers {dict(statuses)}"
            )
            calm.set()
            for future in clients:
                future.result()
        admin.dispose()
    assert set(statuses) <= {200, 503}


CLIENTS = 10
STORM_SECONDS = 10
TERMINATE_SERVICE_BACKENDS = """
    SELECT pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""


def sampled(seconds: float) -> Iterator[None]:
    """Every 0.2 s for `seconds`: the metrics are sampled once a second."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        yield
        time.sleep(0.2)


def pool_size(service: Service) -> int:
    """The connections the service's pool holds, as its metrics say (sampled every second)."""
    return int(total(scrape(service), "todo_api_db_pool_connections"))
