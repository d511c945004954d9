// changes() and subscribe() against a live todo-api (tests/system/test_typescript_live.py starts it with
// STREAM_HEARTBEAT_SECONDS=1): BASE_URL names it, SECRET is its BETTER_AUTH_SECRET (each test mints
// tokens for a fresh user), GONE_USER and GONE_SINCE a user and a change token of theirs older than
// the feed keeps.
import assert from "node:assert/strict";
import { createHmac, randomUUID } from "node:crypto";
import { test } from "node:test";
import { isDeepStrictEqual } from "node:util";

import { type Change, type SubscribeOptions, type TokenSource, changes, subscribe } from "../src/live.js";
import { ProblemError, type Task, connect, createTask, deleteTask, listTasks, updateTask } from "../src/tasks.js";
import { Proxy } from "./proxy.js";

const { BASE_URL, SECRET, GONE_USER, GONE_SINCE } = process.env;
if (!BASE_URL || !SECRET || !GONE_USER || !GONE_SINCE) {
  throw new Error("set BASE_URL, SECRET, GONE_USER and GONE_SINCE (tests/system/test_typescript_live.py does)");
}

function mint(user: string, ttl = 600): string {
  const now = Math.floor(Date.now() / 1000);
  const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const unsigned = `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ sub: user, iat: now, exp: now + ttl, jti: randomUUID() })}`;
  return `${unsigned}.${createHmac("sha256", SECRET ?? "").update(unsigned).digest("base64url")}`;
}

const freshUser = () => `ts-live-${randomUUID()}`;

/** What a client following the changes holds, and every event position it was given. */
class Replica {
  readonly tasks = new Map<number, Task>();
  readonly positions: string[] = [];
  apply = (change: Change, position: string | undefined) => {
    if (change.type === "upsert") this.tasks.set(change.task.id, change.task);
    else if (change.type === "delete") this.tasks.delete(change.id);
    if (position !== undefined) this.positions.push(position);
  };
}

async function serverTasks(api: ReturnType<typeof connect>): Promise<Map<number, Task>> {
  const all = new Map<number, Task>();
  for (let cursor: string | null | undefined; cursor !== null; ) {
    const page = await listTasks(api, { limit: 100, ...(cursor ? { cursor } : {}) });
    for (const task of page.tasks) all.set(task.id, task);
    cursor = page.next;
  }
  return all;
}

/** Polls `condition` until it holds; fails naming `what` after `seconds`. */
async function until(what: string, condition: () => boolean | Promise<boolean>, seconds = 20): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail(`not within ${seconds} s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A subscription for `user` through `baseUrl` (often a proxy's), and what it was told. */
function follow(user: string, baseUrl: string, options: Partial<SubscribeOptions> = {}) {
  const replica = new Replica();
  const seen = { opened: 0, errors: [] as unknown[], retries: [] as number[] };
  const subscription = subscribe(connect(baseUrl, "unused"), {
    token: () => mint(user),
    onChange: replica.apply,
    onOpen: () => {
      seen.opened += 1;
    },
    onError: (error, retryMs) => {
      seen.errors.push(error);
      seen.retries.push(retryMs);
    },
    retry: { initialMs: 100, maxMs: 400 },
    ...options,
  });
  return { replica, seen, subscription };
}

/** What `promise` rejects with; the test fails if it resolves. */
function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => assert.fail("expected a rejection"),
    (error: unknown) => error,
  );
}

async function inSync(replica: Replica, api: ReturnType<typeof connect>): Promise<void> {
  let server = new Map<number, Task>();
  await until("the replica equals the server's tasks", async () => {
    server = await serverTasks(api);
    return isDeepStrictEqual(replica.tasks, server);
  });
}

test("without since: the snapshot, then each change as it commits, in order", async () => {
  const user = freshUser();
  const api = connect(BASE_URL, mint(user));
  const before = await Promise.all([1, 2, 3].map((n) => createTask(api, { title: `before ${n}` })));
  const replica = new Replica();
  let opened = 0;
  const subscription = subscribe(api, { onChange: replica.apply, onOpen: () => (opened += 1), idleMs: 5000 });
  await until("the stream opens", () => opened === 1);
  assert.deepEqual([...replica.tasks.keys()].sort(), before.map((task) => task.id).sort());
  assert.ok(subscription.position, "the snapshot's end is the position");

  const added = await createTask(api, { title: "added" });
  await updateTask(api, before[0]?.id ?? 0, { title: "renamed" });
  await deleteTask(api, before[1]?.id ?? 0);
  await inSync(replica, api);
  assert.equal(replica.tasks.get(added.id)?.title, "added");
  assert.equal(replica.positions.at(-1), subscription.position);
  subscription.close();
  await subscription.done;
  assert.equal(opened, 1);
});

test("changes(): a snapshot in pages, then what changed after it; a foreign token is a 400", async () => {
  const user = freshUser();
  const api = connect(BASE_URL, mint(user));
  const tasks = await Promise.all(Array.from({ length: 3 }, (_, n) => createTask(api, { title: `t${n}` })));
  const replica = new Replica();
  const snapshot = await changes(api);
  assert.deepEqual(snapshot.changes.map((change) => change.type), ["upsert", "upsert", "upsert"]);
  for (const change of snapshot.changes) replica.apply(change, undefined);

  await deleteTask(api, tasks[0]?.id ?? 0);
  await createTask(api, { title: "later" });
  const after = await changes(api, snapshot.next);
  assert.deepEqual(after.changes.map((change) => change.type), ["delete", "upsert"]);
  for (const change of after.changes) replica.apply(change, undefined);
  assert.deepEqual(replica.tasks, await serverTasks(api));
  assert.deepEqual((await changes(api, after.next)).changes, []);

  const other = connect(BASE_URL, mint(freshUser()));
  const error = await rejection(changes(other, after.next));
  assert.ok(error instanceof ProblemError && error.status === 400, String(error));
});

test("a dropped connection resumes with Last-Event-ID: nothing missed, nothing twice", async () => {
  const user = freshUser();
  const direct = connect(BASE_URL, mint(user));
  const proxy = await Proxy.start(BASE_URL);
  const { next } = await changes(direct);
  const { replica, seen, subscription } = follow(user, proxy.url, { since: next });
  try {
    await until("the stream opens", () => seen.opened === 1);
    const kept = await createTask(direct, { title: "kept" });
    await until("the first change arrives", () => replica.tasks.has(kept.id));
    const position = subscription.position;

    proxy.mode = "refuse";
    proxy.sever();
    const gone = await createTask(direct, { title: "gone" });
    await deleteTask(direct, gone.id);
    await createTask(direct, { title: "missed" });
    await updateTask(direct, kept.id, { title: "kept, renamed" });
    await until("a reconnection fails while the network is down", () => seen.errors.length >= 2);
    proxy.mode = "pass";

    await inSync(replica, direct);
    assert.equal(seen.opened, 2);
    assert.equal(new Set(replica.positions).size, replica.positions.length, "an event delivered twice");
    const streams = proxy.requests.filter((request) => request.line.startsWith("GET /api/tasks/events "));
    assert.deepEqual(
      streams.map((request) => request.headers["last-event-id"]),
      [next, position],
    );
    assert.ok(streams.every((request) => request.headers.authorization?.startsWith("Bearer ey")));
  } finally {
    subscription.close();
    await proxy.close();
  }
  await subscription.done;
});

test("a connection gone silent is given up after idleMs and resumed", async () => {
  const user = freshUser();
  const direct = connect(BASE_URL, mint(user));
  const proxy = await Proxy.start(BASE_URL);
  const idleMs = 3000; // the service sends a comment every second
  const { replica, seen, subscription } = follow(user, proxy.url, { idleMs });
  try {
    await until("the stream opens", () => seen.opened === 1);
    const before = seen.errors.length; // a busy service may have failed an attempt before: retried, not this
    proxy.mode = "silent";
    const missed = await createTask(direct, { title: "sent into the silence" });
    await until("the silent connection is given up", () => seen.errors.length > before);
    assert.match(String(seen.errors[before]), /sent nothing for 3000 ms/);
    proxy.sever();
    proxy.mode = "pass";
    await until("the missed change arrives", () => replica.tasks.has(missed.id));
    await inSync(replica, direct);
    assert.equal(seen.opened, 2);
  } finally {
    subscription.close();
    await proxy.close();
  }
});

test("after `expired` it reconnects at once, with a token asked for again", async () => {
  const user = freshUser();
  const direct = connect(BASE_URL, mint(user));
  const minted: string[] = [];
  const token: TokenSource = async () => {
    minted.push(mint(user, 2));
    return minted.at(-1) ?? "";
  };
  const { replica, seen, subscription } = follow(user, BASE_URL, { token });
  await until("a first stream", () => seen.opened === 1);
  const first = await createTask(direct, { title: "on the first token" });
  await until("three streams, each on a token of its own", () => seen.opened >= 3, 30);
  const third = await createTask(direct, { title: "on the third" });
  await until("both changes arrive", () => replica.tasks.has(first.id) && replica.tasks.has(third.id));
  subscription.close();
  await subscription.done;
  assert.deepEqual(seen.errors, [], "an expired stream is not a failure");
  assert.equal(new Set(minted).size, minted.length);
  assert.ok(minted.length >= 3);
  await inSync(replica, direct);
});

test("410: onReset, then a new snapshot; without onReset, done rejects with the 410", async () => {
  const api = connect(BASE_URL, mint(GONE_USER));
  await createTask(api, { title: "after the purge" });
  const replica = new Replica();
  replica.tasks.set(-1, { id: -1 } as Task); // something only a reset clears
  let resets = 0;
  let opened = 0;
  const reset = subscribe(api, {
    since: GONE_SINCE,
    onChange: replica.apply,
    onReset: () => {
      resets += 1;
      replica.tasks.clear();
    },
    onOpen: () => (opened += 1),
  });
  await until("the stream opens", () => opened === 1);
  assert.equal(resets, 1);
  await inSync(replica, api);
  reset.close();
  await reset.done;

  const strict = subscribe(api, { since: GONE_SINCE, onChange: () => assert.fail("no change") });
  const error = await rejection(strict.done);
  assert.ok(error instanceof ProblemError && error.status === 410, String(error));
  assert.match(error.problem.detail, /start again/);
});

test("answers that trying again cannot change stop it: 400 for a bad token, 401 twice", async () => {
  const api = connect(BASE_URL, mint(freshUser()));
  const bad = subscribe(api, { since: "not-a-token", onChange: () => {} });
  const tampered = await rejection(bad.done);
  assert.ok(tampered instanceof ProblemError && tampered.status === 400, String(tampered));

  let asked = 0;
  const unauthorized = subscribe(api, {
    token: () => {
      asked += 1;
      return "not.a.jwt";
    },
    onChange: () => {},
  });
  const refused = await rejection(unauthorized.done);
  assert.ok(refused instanceof ProblemError && refused.status === 401, String(refused));
  assert.equal(asked, 2, "asked once more for a token before giving up");
});

test("a 503 is retried, not before its Retry-After; an onChange that throws stops it", async () => {
  const user = freshUser();
  const proxy = await Proxy.start(BASE_URL);
  proxy.mode = "unavailable";
  const { seen, subscription } = follow(user, proxy.url, {
    since: (await changes(connect(BASE_URL, mint(user)))).next,
    onChange: () => {
      throw new Error("the application failed");
    },
    retry: { initialMs: 10, maxMs: 10 },
  });
  const stopped = rejection(subscription.done);
  try {
    await until("a 503 is answered", () => seen.errors.length === 1);
    const [error] = seen.errors;
    assert.ok(error instanceof ProblemError && error.status === 503, String(error));
    assert.ok((seen.retries[0] ?? 0) >= 2000, `retried after ${seen.retries[0]} ms, before the Retry-After of 2 s`);
    proxy.mode = "pass";
    await until("the stream opens", () => seen.opened === 1, 30);
    await createTask(connect(BASE_URL, mint(user)), { title: "breaks the application" });
    assert.match(String(await stopped), /the application failed/);
  } finally {
    subscription.close();
    await proxy.close();
  }
});

test("close() and an aborted signal end it; done resolves", async () => {
  const api = connect(BASE_URL, mint(freshUser()));
  const controller = new AbortController();
  let opened = 0;
  const subscription = subscribe(api, { signal: controller.signal, onChange: () => {}, onOpen: () => (opened += 1) });
  await until("the stream opens", () => opened === 1);
  controller.abort();
  await subscription.done;
  const aborted = new AbortController();
  aborted.abort();
  await subscribe(api, { signal: aborted.signal, onChange: () => {} }).done;
});
