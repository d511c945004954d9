// The generated client against a live todo-api: BASE_URL names the service, TOKEN a fresh user's
// bearer token (tests/system/test_typescript_client.py provides both).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";

import {
  ProblemError,
  type TaskFilter,
  completeTask,
  connect,
  createTask,
  deleteTask,
  getTask,
  listTasks,
  updateTask,
} from "../src/tasks.js";
import { Proxy } from "./proxy.js";

const { BASE_URL, TOKEN } = process.env;
if (!BASE_URL || !TOKEN) throw new Error("set BASE_URL and TOKEN to a running todo-api and a user's token");
const api = connect(BASE_URL, TOKEN);
const unique = () => `ts-client-${randomUUID()}`;

async function problemOf(call: Promise<unknown>): Promise<ProblemError> {
  const error = await call.then(
    () => assert.fail("expected an error answer"),
    (error: unknown) => error,
  );
  assert.ok(error instanceof ProblemError, String(error));
  return error;
}

test("createTask stores the trimmed title and the server's defaults", async () => {
  const title = unique();
  const task = await createTask(api, { title: `  ${title}  `, tags: ["ts", "TS", "client"] });
  assert.equal(task.title, title);
  assert.equal(task.completed, false);
  assert.equal(task.status, "incomplete");
  assert.equal(task.priority, "medium");
  assert.deepEqual(task.tags, ["ts", "client"]);
  assert.equal(task.description, null);
});

test("listTasks filters, and pages through a cursor", async () => {
  const tag = unique().slice(0, 32);
  const urgent = await createTask(api, { title: "first", priority: "urgent", tags: [tag] });
  const high = await createTask(api, { title: "second", priority: "high", tags: [tag] });
  await createTask(api, { title: "other", priority: "urgent" });
  await completeTask(api, high.id, true);

  const open = await listTasks(api, { tag: [tag], status: "incomplete" });
  assert.deepEqual(open.tasks.map((task) => task.id), [urgent.id]);
  assert.equal(open.next, null);

  const byTitle: TaskFilter = { tag: [tag], priority: ["high", "urgent"], sort: "title", limit: 1 };
  const first = await listTasks(api, byTitle);
  assert.deepEqual(first.tasks.map((task) => task.title), ["first"]);
  assert.ok(first.next, "a next cursor while more rows exist");
  const second = await listTasks(api, { ...byTitle, cursor: first.next });
  assert.deepEqual(second.tasks.map((task) => task.title), ["second"]);
  assert.equal(second.next, null);
});

test("completeTask sets completion, and toggles it without a body", async () => {
  const task = await createTask(api, { title: unique() });
  assert.equal((await completeTask(api, task.id, true)).status, "complete");
  assert.equal((await completeTask(api, task.id, true)).completed, true);
  assert.equal((await completeTask(api, task.id)).completed, false);
  assert.equal((await completeTask(api, task.id)).status, "complete");
});

test("updateTask changes only the given fields, and honours If-Match", async () => {
  const task = await createTask(api, { title: unique(), description: "notes", priority: "low" });
  const { etag } = await getTask(api, task.id);
  assert.ok(etag, "GET answers with an ETag");

  const updated = await updateTask(api, task.id, { description: null, due_date: "2030-01-31T17:00:00Z" }, etag);
  assert.equal(updated.description, null);
  assert.equal(updated.priority, "low");
  assert.equal(updated.title, task.title);
  assert.equal(Date.parse(updated.due_date ?? ""), Date.parse("2030-01-31T17:00:00Z"));

  const stale = await problemOf(updateTask(api, task.id, { title: "lost update" }, etag));
  assert.equal(stale.status, 412);
  assert.equal((await getTask(api, task.id)).task.title, task.title);
});

test("deleteTask removes the task; reading it then is a 404 problem", async () => {
  const task = await createTask(api, { title: unique() });
  await deleteTask(api, task.id);
  const missing = await problemOf(getTask(api, task.id));
  assert.equal(missing.status, 404);
  assert.equal(missing.problem.status, 404);
  assert.equal((await problemOf(deleteTask(api, task.id))).status, 404);
});

test("an invalid body is read as a problem+json with field errors", async () => {
  const { problem, status } = await problemOf(createTask(api, { title: "   " }));
  assert.equal(status, 422);
  assert.equal(problem.status, 422);
  assert.equal(problem.error, problem.detail);
  assert.ok(problem.errors?.some((error) => error.field === "title"), JSON.stringify(problem));
});

test("a token provider is asked once, then again only after a 401, and the refused call is sent again", async () => {
  const asked: boolean[] = [];
  const provided = connect(BASE_URL, ({ refresh }) => {
    asked.push(refresh);
    return asked.length === 1 ? "not-a-token" : TOKEN;
  });
  const title = unique();
  const task = await createTask(provided, { title }); // refused once, then created once
  await getTask(provided, task.id);
  assert.deepEqual(asked, [false, true]);
  assert.deepEqual((await listTasks(api, { q: title })).tasks.map((found) => found.id), [task.id]);
  assert.equal(await provided.token(), TOKEN);
});

test("a fixed token that is refused is a 401 problem, sent once", async () => {
  const refused = await problemOf(listTasks(connect(BASE_URL, "not-a-token")));
  assert.equal(refused.status, 401);
});

test("a base URL ending in /api is refused before any call", () => {
  assert.throws(() => connect(`${BASE_URL}/api/`, TOKEN), /without \/api/);
  assert.equal(connect(`${BASE_URL}/`, TOKEN).baseUrl, BASE_URL);
});

test("createTask retries a lost answer and a 503 with its one Idempotency-Key: each task stored once", async () => {
  const proxy = await Proxy.start(BASE_URL);
  try {
    const through = connect(proxy.url, TOKEN);
    const lost = unique();
    proxy.mode = "lose-answer"; // the create is made; its answer never arrives
    assert.equal((await createTask(through, { title: lost }, { pauseMs: 50 })).title, lost);
    const posts = proxy.requests.filter((request) => request.line.startsWith("POST /api/tasks "));
    assert.equal(posts.length, 2);
    assert.match(posts[0]?.headers["idempotency-key"] ?? "", /^[0-9a-f-]{36}$/);
    assert.equal(posts[1]?.headers["idempotency-key"], posts[0]?.headers["idempotency-key"]);

    const refused = unique();
    proxy.mode = "unavailable"; // a 503 with Retry-After: 2, from the proxy itself
    const pending = createTask(through, { title: refused });
    const deadline = Date.now() + 10_000;
    while (proxy.unavailableAnswers === 0) {
      assert.ok(Date.now() < deadline, "the first attempt never came");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    proxy.mode = "pass";
    assert.equal((await pending).title, refused);

    for (const title of [lost, refused]) {
      const { tasks } = await listTasks(api, { q: title });
      assert.deepEqual(tasks.map((task) => task.title), [title]); // neither lost nor stored twice
    }
  } finally {
    await proxy.close();
  }
});
