// Typed calls to todo-api through openapi-fetch; every type comes from schema.d.ts, generated
// from openapi.yaml, so a contract change that breaks a caller breaks `tsc` first.
import createClient, { type Client } from "openapi-fetch";
import type { components, paths } from "./schema.js";

export type Task = components["schemas"]["Task"];
export type TaskCreate = components["schemas"]["TaskCreate"];
export type TaskPatch = components["schemas"]["TaskPatch"];
export type Problem = components["schemas"]["Problem"];
export type TaskFilter = NonNullable<paths["/api/tasks"]["get"]["parameters"]["query"]>;

/**
 * The bearer token, or a function (sync or async) that returns one, such as a call to Better
 * Auth's `authClient.token()`. A function is asked for the first request, again when the token it
 * gave is within a minute of its `exp`, and again — once — after a 401, whose request is then sent
 * a second time with the new token; `{ refresh: true }` says the last one was refused.
 */
export type TokenProvider = string | ((options: { refresh: boolean }) => string | Promise<string>);

/** openapi-fetch's typed client for the contract, and the token every call carries. */
export type Api = Client<paths> & {
  readonly baseUrl: string;
  /** The current token from the provider (a fresh one with `refresh: true`), for calls made outside
   *  this client, such as a stream of events opened with `fetch`. */
  token(options?: { refresh?: boolean }): Promise<string>;
};

const REFRESH_BEFORE_EXPIRY_MS = 60_000;

/**
 * A client for the service at `baseUrl` — its origin, like `https://api.example.com`, or the
 * folder it is served under; the calls add `/api/…` themselves — with `token` on every call.
 */
export function connect(baseUrl: string, token: TokenProvider): Api {
  const root = baseUrl.replace(/\/+$/, "");
  if (/\/api$/i.test(root)) {
    throw new Error(
      `connect(${JSON.stringify(baseUrl)}): give the service's base URL without /api ` +
        `(${JSON.stringify(root.slice(0, -4) || "/")}): every call adds /api/… itself`,
    );
  }
  const tokens = tokenSource(token);
  const client = createClient<paths>({
    baseUrl: root,
    fetch: async (request) => {
      // A call that brings its own Authorization (subscribe() with its own token) keeps it.
      if (request.headers.has("Authorization")) return fetch(request);
      const retry = typeof token === "function" ? request.clone() : undefined;
      const response = await fetch(withBearer(request, await tokens(false)));
      if (response.status !== 401 || !retry) return response;
      return fetch(withBearer(retry, await tokens(true)));
    },
  });
  return Object.assign(client, {
    baseUrl: root,
    token: ({ refresh = false } = {}) => tokens(refresh),
  });
}

function withBearer(request: Request, token: string): Request {
  const headers = new Headers(request.headers);
  headers.set("Authorization", `Bearer ${token}`);
  return new Request(request, { headers });
}

/** The provider's token, asked again only when needed; concurrent callers share one request for it. */
function tokenSource(provider: TokenProvider): (refresh: boolean) => Promise<string> {
  if (typeof provider === "string") return async () => provider;
  let current: Promise<string> | undefined;
  return async (refresh) => {
    if (current && !refresh) {
      const token = await current.catch(() => undefined);
      if (token !== undefined && !expiresSoon(token)) return token;
    }
    current = Promise.resolve(provider({ refresh }));
    return current;
  };
}

/** Whether a JWT's `exp` (read, not verified: the service verifies) is within a minute; an opaque
 *  token is used until it is refused. */
function expiresSoon(token: string): boolean {
  try {
    const payload = token.split(".")[1] ?? "";
    const { exp } = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/"))) as { exp?: unknown };
    return typeof exp === "number" && exp * 1000 - Date.now() < REFRESH_BEFORE_EXPIRY_MS;
  } catch {
    return false;
  }
}

/** An error answer, read as the RFC 9457 problem+json body the contract promises. */
export class ProblemError extends Error {
  readonly status: number;
  constructor(readonly problem: Problem, response: Response) {
    super(`${response.status} ${problem.title}: ${problem.detail}`);
    this.status = response.status;
  }
}

function fail(error: Problem | undefined, response: Response): never {
  if (!response.headers.get("content-type")?.startsWith("application/problem+json") || !error) {
    throw new Error(`${response.status} without a problem+json body`);
  }
  throw new ProblemError(error, response);
}

/** How `createTask` retries: `attempts` in all; a 503's `Retry-After`, else `pauseMs` doubling. */
export type CreateRetries = { attempts?: number; pauseMs?: number; key?: string };

/**
 * Creates a task with an `Idempotency-Key` of its own (`retries.key`, else a random UUID), and
 * sends it again with that key when the answer is a 503 or never comes (the network failed): the
 * service then stores it once, and a retry of a create that was made answers with it. A 503 that
 * says its outcome is unknown is exactly that case.
 */
export async function createTask(api: Api, task: TaskCreate, retries: CreateRetries = {}): Promise<Task> {
  const { attempts = 4, pauseMs = 500, key = crypto.randomUUID() } = retries;
  for (let attempt = 1; ; attempt++) {
    const last = attempt >= attempts;
    const backoffMs = pauseMs * 2 ** (attempt - 1);
    let answer;
    try {
      answer = await api.POST("/api/tasks", { body: task, params: { header: { "Idempotency-Key": key } } });
    } catch (error) {
      if (last) throw error;
      await pause(backoffMs);
      continue;
    }
    const { data, error, response } = answer;
    if (data) return data;
    if (response.status !== 503 || last) fail(error, response);
    const retryAfter = Number(response.headers.get("retry-after"));
    await pause(Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : backoffMs);
  }
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The task and its current ETag, for a later conditional `updateTask`. */
export async function getTask(api: Api, id: number): Promise<{ task: Task; etag: string | null }> {
  const { data, error, response } = await api.GET("/api/tasks/{id}", { params: { path: { id } } });
  return { task: data ?? fail(error, response), etag: response.headers.get("etag") };
}

/** One page of the caller's tasks, and the cursor of the next page when there is one. */
export async function listTasks(api: Api, filter: TaskFilter = {}): Promise<{ tasks: Task[]; next: string | null }> {
  const { data, error, response } = await api.GET("/api/tasks", { params: { query: filter } });
  if (!data) fail(error, response);
  const next = response.headers.get("link")?.match(/<([^>]*)>;\s*rel="next"/)?.[1];
  return { tasks: data, next: next ? new URL(next, response.url).searchParams.get("cursor") : null };
}

/** Sets `completed`, or toggles it when `completed` is left out. */
export async function completeTask(api: Api, id: number, completed?: boolean): Promise<Task> {
  const { data, error, response } = await api.PATCH("/api/tasks/{id}/complete", {
    params: { path: { id } },
    body: completed === undefined ? undefined : { completed },
  });
  return data ?? fail(error, response);
}

/** Changes the given fields; with `ifMatch` (`getTask`'s `etag`), only if the task still has that
 *  ETag, else a 412 `ProblemError`. */
export async function updateTask(api: Api, id: number, changes: TaskPatch, ifMatch?: string | null): Promise<Task> {
  const { data, error, response } = await api.PATCH("/api/tasks/{id}", {
    params: { path: { id }, header: ifMatch ? { "If-Match": ifMatch } : {} },
    body: changes,
  });
  return data ?? fail(error, response);
}

export async function deleteTask(api: Api, id: number): Promise<void> {
  const { error, response } = await api.DELETE("/api/tasks/{id}", { params: { path: { id } } });
  if (!response.ok) fail(error, response);
}
