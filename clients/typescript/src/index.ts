// The package's entry point: typed calls to todo-api, and the types generated from its contract.
export * from "./tasks.js";
export * from "./live.js";
export type { components, operations, paths } from "./schema.js";
