// A small program written against the installed package, as a frontend's code would use it
// (tests/system/test_typescript_client.py installs the packed tarball into a fresh project, type-checks
// this with tsc and runs it under Node). BASE_URL names the service, TOKEN a user's bearer token;
// it prints what it saw as JSON. The token comes from a provider, as from Better Auth's
// `authClient.token()`: the first one it hands out is refused, so the client asks again.
import {
  type Problem,
  ProblemError,
  type TaskCreate,
  completeTask,
  connect,
  createTask,
  deleteTask,
  getTask,
  listTasks,
  updateTask,
} from "todo-api-client";

const { BASE_URL, TOKEN } = process.env;
if (!BASE_URL || !TOKEN) throw new Error("set BASE_URL and TOKEN to a running todo-api and a user's token");
const asked: boolean[] = [];
const api = connect(BASE_URL, async ({ refresh }) => {
  asked.push(refresh);
  return asked.length === 1 ? "a-token-that-expired" : TOKEN;
});

let misplaced = "";
try {
  connect(`${BASE_URL}/api`, TOKEN);
} catch (error) {
  misplaced = String(error);
}

/** The problem+json body of a call that must fail. */
async function problemOf(call: Promise<unknown>): Promise<Problem> {
  try {
    await call;
  } catch (error) {
    if (error instanceof ProblemError) return error.problem;
    throw error;
  }
  throw new Error("expected an error answer");
}

const draft: TaskCreate = { title: "Buy milk", priority: "high", tags: ["shopping"] };
// @ts-expect-error: the types come from the contract, which has no priority "someday"
const wrong: TaskCreate = { title: "Buy milk", priority: "someday" };

const created = await createTask(api, draft);
const listed = await listTasks(api, { tag: ["shopping"], status: "incomplete" });
const completed = await completeTask(api, created.id, true);
const { etag } = await getTask(api, created.id);
const renamed = await updateTask(api, created.id, { title: "Buy oat milk" }, etag);
const stale = await problemOf(updateTask(api, created.id, { title: "a lost update" }, etag));
const invalid = await problemOf(createTask(api, { title: "   " }));
await deleteTask(api, created.id);
const gone = await problemOf(getTask(api, created.id));

console.log(
  JSON.stringify({
    created,
    listed: listed.tasks.map((task) => task.id),
    completed: completed.completed,
    renamed: renamed.title,
    stale: stale.status,
    invalid: { status: invalid.status, fields: invalid.errors?.map((error) => error.field) },
    gone: gone.status,
    asked,
    misplaced,
  }),
);
