// Fails when the committed src/schema.ts is not what openapi-typescript makes of openapi.yaml now.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const dir = mkdtempSync(join(tmpdir(), "todo-api-schema-"));
try {
  const fresh = join(dir, "schema.ts");
  execFileSync("node_modules/.bin/openapi-typescript", ["../../openapi.yaml", "--output", fresh], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  if (readFileSync(fresh, "utf8") !== readFileSync("src/schema.ts", "utf8")) {
    console.error("src/schema.ts is stale against openapi.yaml: run `npm run generate` in clients/typescript.");
    process.exit(1);
  }
  console.log("src/schema.ts matches openapi.yaml");
} finally {
  rmSync(dir, { recursive: true, force: true });
}
