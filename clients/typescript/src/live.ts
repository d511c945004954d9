// Following the caller's tasks as they change: the change feed read to the end (`changes`), and its
// live stream (`subscribe`), read through fetch with the bearer header (browsers' EventSource cannot
// send one, and tokens never go in URLs), resumed with Last-Event-ID after every break.
import type { components } from "./schema.js";
import { EventStreamParser } from "./sse.js";
import { type Api, type Problem, ProblemError } from "./tasks.js";

export type Change = components["schemas"]["Change"];
export type ChangePage = components["schemas"]["ChangePage"];
/** A bearer token, or a function giving the current one; a function is asked before every request. */
export type TokenSource = string | (() => string | Promise<string>);

export interface FeedOptions {
  /** The bearer token to send; without it, the requests carry what `api` sends. */
  token?: TokenSource;
  signal?: AbortSignal;
}

export interface SubscribeOptions extends FeedOptions {
  /** Where to start: the `next` of `changes()`, or a saved `position`. Without it, the subscription
   *  first delivers a snapshot (every current task as an upsert), then what changes after it. */
  since?: string;
  /** Applies one change. Awaited, so changes are applied one at a time, in commit order. `position`
   *  is where to resume from once it is applied (undefined within a snapshot's page, but its last).
   *  A throw stops the subscription: `done` rejects with it. */
  onChange: (change: Change, position: string | undefined) => void | Promise<void>;
  /** The server no longer has the changes since the position (410: older than the feed keeps, or
   *  the feed started again): clear what you hold; the subscription then delivers a new snapshot.
   *  Without it, the subscription stops and `done` rejects with the 410's ProblemError. */
  onReset?: () => void | Promise<void>;
  /** A connection is open; it first delivers what was missed, then each change as it commits. */
  onOpen?: () => void;
  /** A connection failed or broke (network, 429, 5xx, silence); the next try is in `retryMs`. */
  onError?: (error: unknown, retryMs: number) => void;
  /** Delays after failures: doubling from `initialMs` (500) up to `maxMs` (30 000), jittered, and
   *  never shorter than the answer's Retry-After. */
  retry?: { initialMs?: number; maxMs?: number };
  /** A connection that sends nothing this long is taken as dropped (the server sends a comment at
   *  least every 15 s). Default 45 000. */
  idleMs?: number;
}

export interface Subscription {
  /** Where the changes delivered so far end: a `since` to subscribe again from later. */
  readonly position: string | undefined;
  /** Resolves once closed; rejects with what stopped it otherwise: an answer that trying again
   *  cannot change (a ProblemError: 400 for a token that is not the caller's, 403, 410 without
   *  `onReset`, 401 twice in a row with the token asked for again), or what `onChange` threw. */
  readonly done: Promise<void>;
  close(): void;
}

const PAGE = 500;
const CHANGES = new Set(["upsert", "delete", "reminder"]);
const RETRIED = new Set([408, 429]); // and every 5xx
const GAP_MS = 1000; // least time from opening a stream the server ended to opening the next

/** Every change after `since` (without it, a snapshot: every current task as an upsert), read
 *  page by page until the caller is up to date; `next` is where to follow from. Rejects with a
 *  ProblemError for an error answer. */
export async function changes(
  api: Api,
  since?: string,
  options: FeedOptions = {},
): Promise<{ changes: Change[]; next: string }> {
  const all: Change[] = [];
  for (let after = since; ; ) {
    const page = await read(api, after, options).catch((error: unknown) => {
      throw error instanceof Refused ? error.error : error;
    });
    all.push(...page.changes);
    if (!page.more) return { changes: all, next: page.next };
    after = page.next;
  }
}

/** Delivers the caller's changes after `since` to `onChange` as they commit, through any break:
 *  it reconnects by itself, with Last-Event-ID and the token asked for again; at once after the
 *  server ends a stream (its token expired, it shut down), after a delay after a failure. */
export function subscribe(api: Api, options: SubscribeOptions): Subscription {
  const stop = new AbortController();
  const close = () => stop.abort();
  options.signal?.addEventListener("abort", close, { once: true });
  if (options.signal?.aborted) close();
  const follower = new Follower(api, options, stop.signal);
  const done = follower.run().finally(() => options.signal?.removeEventListener("abort", close));
  return {
    get position() {
      return follower.position;
    },
    done,
    close,
  };
}

class Follower {
  position: string | undefined;
  private failures = 0;
  private unauthorized = 0;

  constructor(
    private readonly api: Api,
    private readonly options: SubscribeOptions,
    private readonly stopped: AbortSignal,
  ) {
    this.position = options.since;
  }

  async run(): Promise<void> {
    let next = 0; // when a stream the server ended may be followed by the next
    while (!this.stopped.aborted) {
      let wait: number;
      try {
        if (this.position === undefined) await this.snapshot();
        await pause(next - Date.now(), this.stopped);
        const opened = Date.now();
        await this.stream();
        next = opened + GAP_MS;
        continue;
      } catch (error) {
        if (this.stopped.aborted) return;
        wait = await this.recover(error);
      }
      await pause(wait, this.stopped);
    }
  }

  /** How long to wait before trying again after `error`; throws when trying again cannot help. */
  private async recover(error: unknown): Promise<number> {
    if (error instanceof Stopped) throw error.cause;
    if (error instanceof Refused) {
      if (error.status === 410 && this.options.onReset) {
        await this.options.onReset();
        this.position = undefined;
        return 0;
      }
      if (error.status === 401 && ++this.unauthorized < 2) return 0;
      if (error.status < 500 && !RETRIED.has(error.status)) throw error.error;
    }
    this.failures += 1;
    const { initialMs = 500, maxMs = 30_000 } = this.options.retry ?? {};
    const ceiling = Math.min(maxMs, initialMs * 2 ** (this.failures - 1));
    const wait = Math.max(ceiling * (0.5 + Math.random() / 2), error instanceof Refused ? error.retryAfterMs : 0);
    this.options.onError?.(error instanceof Refused ? error.error : error, wait);
    return wait;
  }

  private async snapshot(): Promise<void> {
    for (;;) {
      const page = await read(this.api, this.position, { ...this.options, signal: this.stopped });
      this.unauthorized = 0;
      const last = page.changes.length - 1;
      for (const [index, change] of page.changes.entries()) {
        await this.deliver(change, index === last ? page.next : undefined);
      }
      this.position = page.next;
      if (!page.more) return;
    }
  }

  /** One connection, until the server ends it; throws when it fails or breaks. */
  private async stream(): Promise<void> {
    const connection = new AbortController();
    const abort = () => connection.abort();
    this.stopped.addEventListener("abort", abort);
    const idleMs = this.options.idleMs ?? 45_000;
    let idle: ReturnType<typeof setTimeout> | undefined;
    const watch = () => {
      clearTimeout(idle);
      idle = setTimeout(() => connection.abort(new Error(`the stream sent nothing for ${idleMs} ms`)), idleMs);
    };
    try {
      const headers = await bearer(this.options.token);
      watch();
      const { data, error, response } = await this.api.GET("/api/tasks/events", {
        params: { header: this.position === undefined ? {} : { "Last-Event-ID": this.position } },
        headers,
        parseAs: "stream",
        signal: connection.signal,
      });
      if (!response.ok) throw new Refused(error, response);
      const type = response.headers.get("content-type") ?? "";
      if (!data || !type.startsWith("text/event-stream")) throw new Error(`${response.status} ${type}: not a stream`);
      this.failures = 0;
      this.unauthorized = 0;
      this.options.onOpen?.();
      const reader = data.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new EventStreamParser();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        clearTimeout(idle); // an onChange that takes long is not a silent connection
        for (const event of parser.push(value)) {
          if (event.type === "expired") return;
          if (this.stopped.aborted) return;
          if (CHANGES.has(event.type)) await this.deliver(JSON.parse(event.data) as Change, event.id);
        }
        watch();
      }
    } finally {
      clearTimeout(idle);
      this.stopped.removeEventListener("abort", abort);
      connection.abort(); // lets go of a body not read to its end
    }
  }

  private async deliver(change: Change, position: string | undefined): Promise<void> {
    try {
      await this.options.onChange(change, position);
    } catch (error) {
      throw new Stopped(error);
    }
    if (position !== undefined) this.position = position;
  }
}

/** What onChange or onReset threw: it ends the subscription. */
class Stopped {
  constructor(readonly cause: unknown) {}
}

/** An error answer: its status, its Retry-After, and the error an application sees. */
class Refused {
  readonly status: number;
  readonly retryAfterMs: number;
  readonly error: Error;

  constructor(body: unknown, response: Response) {
    this.status = response.status;
    const problem = response.headers.get("content-type")?.startsWith("application/problem+json");
    this.error =
      problem && body
        ? new ProblemError(body as Problem, response)
        : new Error(`${response.status} without a problem+json body`);
    const after = response.headers.get("retry-after") ?? "";
    const seconds = /^\d+$/.test(after) ? Number(after) * 1000 : Date.parse(after) - Date.now();
    this.retryAfterMs = Number.isFinite(seconds) ? Math.max(0, seconds) : 0;
  }
}

async function read(api: Api, since: string | undefined, options: FeedOptions): Promise<ChangePage> {
  const { data, error, response } = await api.GET("/api/tasks/changes", {
    params: { query: since === undefined ? { limit: PAGE } : { since, limit: PAGE } },
    headers: await bearer(options.token),
    signal: options.signal,
  });
  if (!data) throw new Refused(error, response);
  return data;
}

async function bearer(token: TokenSource | undefined): Promise<Record<string, string>> {
  if (token === undefined) return {};
  return { Authorization: `Bearer ${typeof token === "string" ? token : await token()}` };
}

/** Waits `ms`, or less when the subscription stops or a browser comes back online. */
function pause(ms: number, stopped: AbortSignal): Promise<void> {
  if (ms <= 0 || stopped.aborted) return Promise.resolve();
  const online = globalThis as Partial<Pick<EventTarget, "addEventListener" | "removeEventListener">>;
  return new Promise((resolve) => {
    const end = () => {
      clearTimeout(timer);
      stopped.removeEventListener("abort", end);
      online.removeEventListener?.("online", end);
      resolve();
    };
    const timer = setTimeout(end, ms);
    stopped.addEventListener("abort", end);
    online.addEventListener?.("online", end);
  });
}
