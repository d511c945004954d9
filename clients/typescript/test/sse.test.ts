// The event-stream parser against the parsing rules of WHATWG HTML, fed whole and cut at every place.
import assert from "node:assert/strict";
import { test } from "node:test";

import { EventStreamParser, type ServerSentEvent } from "../src/sse.js";

const STREAM = [
  ": connected",
  "",
  "id: 1",
  "event: upsert",
  'data: {"a":1}',
  "",
  "event: expired",
  "data: first line",
  "data:second line",
  "data",
  "",
  ": keep-alive",
  "retry: 10",
  "unknown: field",
  "",
  "id: 2\0ignored",
  "data: x",
  "",
  "id",
  "data:  two spaces",
  "",
  "event: delete",
  "id: 3",
  "",
  "data: never finished",
].join("\n");

const EXPECTED: ServerSentEvent[] = [
  { type: "upsert", data: '{"a":1}', id: "1" },
  { type: "expired", data: "first line\nsecond line\n", id: "1" },
  { type: "message", data: "x", id: "1" },
  { type: "message", data: " two spaces", id: "" },
];

function parse(chunks: string[]): ServerSentEvent[] {
  const parser = new EventStreamParser();
  return chunks.flatMap((chunk) => parser.push(chunk));
}

test("fields, comments, ids that carry over, events without data, and an unfinished last event", () => {
  assert.deepEqual(parse([STREAM]), EXPECTED);
});

test("CRLF, CR and LF all end lines", () => {
  for (const ending of ["\r\n", "\r", "\n"]) {
    assert.deepEqual(parse([STREAM.replaceAll("\n", ending)]), EXPECTED, JSON.stringify(ending));
  }
});

test("chunks cut anywhere give the same events, a CRLF cut in two included", () => {
  for (const ending of ["\r\n", "\r", "\n"]) {
    const text = STREAM.replaceAll("\n", ending);
    for (let cut = 0; cut <= text.length; cut += 1) {
      assert.deepEqual(parse([text.slice(0, cut), text.slice(cut)]), EXPECTED, `cut at ${cut}`);
    }
    assert.deepEqual(parse([...text]), EXPECTED, "one character at a time");
  }
});

test("a blank line right after a CR that ended a chunk still dispatches", () => {
  assert.deepEqual(parse(["data: a\r", "\r", "\n"]), [{ type: "message", data: "a", id: "" }]);
  assert.deepEqual(parse(["data: a\r", "\n", "\r\n"]), [{ type: "message", data: "a", id: "" }]);
  assert.deepEqual(parse(["data: a\r", "\n", "\n"]), [{ type: "message", data: "a", id: "" }]);
});
