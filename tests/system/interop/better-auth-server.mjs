// A real Better Auth server for tests/system/interop: email + password sign-up, the jwt() plugin
// (EdDSA keys, GET /api/auth/token, GET /api/auth/jwks) and the session cookie cache as an
// HS256 JWT, all kept in memory. It listens on a free loopback port and prints
// {"url": "http://127.0.0.1:<port>"} as its first line of output.
//
// Environment: BETTER_AUTH_SECRET (required), ROTATION_SECONDS (the jwt plugin's
// jwks.rotationInterval: a key older than this is replaced at the next signing; default 1 day).
import { createServer } from "node:http";

import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";
import { jwt } from "better-auth/plugins";

const secret = process.env.BETTER_AUTH_SECRET;
if (!secret) throw new Error("BETTER_AUTH_SECRET is required");
const rotationSeconds = Number(process.env.ROTATION_SECONDS || 86400);

const server = createServer();
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const baseURL = `http://127.0.0.1:${server.address().port}`;

const auth = betterAuth({
  baseURL, // the JWT plugin's iss and aud: this origin
  secret,
  database: memoryAdapter({ user: [], session: [], account: [], verification: [], jwks: [] }),
  emailAndPassword: { enabled: true },
  session: { cookieCache: { enabled: true, strategy: "jwt", maxAge: 300 } },
  plugins: [jwt({ jwks: { rotationInterval: rotationSeconds } })],
  telemetry: { enabled: false },
});

server.on("request", toNodeHandler(auth));
console.log(JSON.stringify({ url: baseURL }));
