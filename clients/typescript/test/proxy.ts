// A TCP proxy in front of the service that a test can break the way networks break: refuse new
// connections, cut the open ones, go silent, answer 503 itself, or pass a request on and lose its
// answer. It records each request's first line and headers.
import { type Server, type Socket, connect, createServer } from "node:net";

// "lose-answer": the next request reaches the service, its answer is cut off, and the proxy passes again.
export type Mode = "pass" | "refuse" | "silent" | "unavailable" | "lose-answer";

export class Proxy {
  mode: Mode = "pass";
  readonly requests: { line: string; headers: Record<string, string> }[] = [];
  unavailableAnswers = 0; // the 503s the proxy answered itself
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(target: string): Promise<Proxy> {
    const { hostname, port } = new URL(target);
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    if (!address || typeof address === "string") throw new Error("the proxy has no port");
    const proxy = new Proxy(server, `http://127.0.0.1:${address.port}`);
    server.on("connection", (client) => proxy.accept(client, hostname, Number(port)));
    return proxy;
  }

  /** Cuts every open connection. */
  sever(): void {
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  async close(): Promise<void> {
    this.sever();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private accept(client: Socket, host: string, port: number): void {
    if (this.mode === "refuse") {
      client.destroy();
      return;
    }
    if (this.mode === "unavailable") {
      const body = JSON.stringify({ type: "about:blank", title: "Service Unavailable", status: 503, detail: "x", error: "x" });
      client.once("data", () => {
        this.unavailableAnswers += 1;
        client.end(
          "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\nRetry-After: 2\r\n" +
            `Connection: close\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
        );
      });
      return;
    }
    const upstream = connect(port, host);
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on("error", () => {});
      socket.on("close", () => {
        this.sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.on("data", (chunk: Buffer) => {
      this.record(chunk.toString("latin1"));
      if (this.mode !== "silent") upstream.write(chunk);
    });
    const losing = this.mode === "lose-answer";
    upstream.on("data", (chunk: Buffer) => {
      if (losing) {
        this.mode = "pass";
        client.destroy();
        upstream.destroy();
      } else if (this.mode !== "silent") client.write(chunk);
    });
  }

  private record(text: string): void {
    const [line = "", ...rest] = text.split("\r\n\r\n")[0]?.split("\r\n") ?? [];
    if (!/^[A-Z]+ \S+ HTTP\/1\.1$/.test(line)) return;
    const headers = Object.fromEntries(
      rest.map((header) => [header.slice(0, header.indexOf(":")).toLowerCase(), header.slice(header.indexOf(":") + 1).trim()]),
    );
    this.requests.push({ line, headers });
  }
}
