// A text/event-stream parser, by the parsing rules of WHATWG HTML ("Server-sent events",
// "Interpreting an event stream"), for streams read through fetch: EventSource cannot send an
// Authorization header. It takes decoded text (TextDecoderStream drops the byte order mark) in
// chunks cut anywhere, even between the CR and LF of a line ending.

export interface ServerSentEvent {
  /** `event:`, or "message" when the event named none. */
  type: string;
  /** The `data:` lines, joined with "\n". */
  data: string;
  /** The last `id:` seen so far in the stream (it carries over to events without one), or "". */
  id: string;
}

export class EventStreamParser {
  private rest = ""; // text after the last line ending
  private afterCR = false; // the last chunk ended in CR: a LF opening the next one ends no line
  private data = "";
  private type = "";
  private lastEventId = "";

  /** The events that `chunk` completes, in order. */
  push(chunk: string): ServerSentEvent[] {
    if (chunk === "") return [];
    const text = this.afterCR && chunk.startsWith("\n") ? chunk.slice(1) : chunk;
    this.afterCR = text.endsWith("\r");
    const lines = (this.rest + text).split(/\r\n|\r|\n/);
    this.rest = lines.pop() ?? "";
    const events: ServerSentEvent[] = [];
    for (const line of lines) {
      const event = this.line(line);
      if (event) events.push(event);
    }
    return events;
  }

  private line(line: string): ServerSentEvent | undefined {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return undefined; // a comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(line[colon + 1] === " " ? colon + 2 : colon + 1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data += `${value}\n`;
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    // `retry` and unknown fields are ignored: when to reconnect is subscribe()'s own rule.
    return undefined;
  }

  private dispatch(): ServerSentEvent | undefined {
    const { data, type } = this;
    this.data = "";
    this.type = "";
    if (data === "") return undefined;
    return { type: type || "message", data: data.slice(0, -1), id: this.lastEventId };
  }
}
