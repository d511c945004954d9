// Typed calls to todo-api through openapi-fetch; every type comes from schema.d.ts, generated
// from openapi.yaml, so a contract change that breaks a caller breaks `tsc` first.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

export type Task = components["schemas"]["Task"];
export type TaskCreate = components["schemas"]["TaskCreate"];
export type TaskPatch = components["schemas"]["TaskPatch"];
export type Problem = components["schemas"]["Problem"];
export type TaskFilter = NonNullable<paths["/api/tasks"]["get"]["parameters"]["query"]>;
export type Api = ReturnType<typeof connect>;

/** A client that sends `token` as the bearer on every call. */
export function connect(baseUrl: string, token: string) {
  return createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });
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

export async function createTask(api: Api, task: TaskCreate): Promise<Task> {
  const { data, error, response } = await api.POST("/api/tasks", { body: task });
  return data ?? fail(error, response);
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

/** Changes the given fields; with `ifMatch`, only if the task still has that ETag (else a 412). */
export async function updateTask(api: Api, id: number, changes: TaskPatch, ifMatch?: string): Promise<Task> {
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
