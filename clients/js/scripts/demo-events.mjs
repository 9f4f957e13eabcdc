/**
 * Writes src/demo/events.ts, the demo schema's events map, so that the demo
 * entry point's event list is never copied by hand: the text is what
 * `rowcast types` prints for the built-in routes (the repository's
 * routes.toml) and a database holding sql/demo.sql, followed by the map's
 * names as a list the demo's named hooks are made from at run time.
 *
 *   DATABASE_URL=postgres://.../demo ROWCAST_BIN=target/debug/rowcast npm run demo-events
 *
 * An integration test (test/integration/demo-events.test.ts) checks that
 * the committed file is what this makes; with ROWCAST_UPDATE_DEMO_EVENTS=1
 * it writes the file instead.
 */

import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** Where the committed file lives. */
export const OUTPUT = fileURLToPath(new URL("../src/demo/events.ts", import.meta.url));

const HEADER = `// The demo schema's events (sql/demo.sql, routed by the repository's
// routes.toml): made by scripts/demo-events.mjs from \`rowcast types\`. Do not
// edit; regenerate after changing either file.
`;

/** What `rowcast types` prints for the built-in routes and the database at `databaseUrl`. */
export function declarations(bin, databaseUrl) {
  const { ROWCAST_ROUTES: _routes, ...env } = process.env; // the built-in routes, never a deployer's
  return execFileSync(bin, ["types"], {
    encoding: "utf8",
    env: { ...env, DATABASE_URL: databaseUrl },
    stdio: ["ignore", "pipe", "inherit"],
  });
}

/** The event names of the `RowcastEvents` interface in `text`. */
export function eventNames(text) {
  const body = /^export interface RowcastEvents \{\n([\s\S]*?)^\}/m.exec(text);
  if (!body) throw new Error("no `export interface RowcastEvents` in the declarations");
  return [...body[1].matchAll(/^ {2}("(?:[^"\\]|\\.)*"):/gm)].map((match) => JSON.parse(match[1]));
}

/** The file's text for `rowcast types`' output. */
export function demoEvents(text) {
  const names = eventNames(text)
    .map((name) => `  ${JSON.stringify(name)},\n`)
    .join("");
  return `${HEADER}\n${text.trimEnd()}\n
/** Every name of \`RowcastEvents\`, at run time. */
export const ROWCAST_EVENT_NAMES = [
${names}] as const satisfies readonly RowcastEventName[];
`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const databaseUrl = process.env.DATABASE_URL;
  if (!databaseUrl) {
    console.error("DATABASE_URL must name a database holding sql/demo.sql (ROWCAST_BIN: the rowcast binary, default `rowcast`)");
    process.exit(2);
  }
  writeFileSync(OUTPUT, demoEvents(declarations(process.env.ROWCAST_BIN || "rowcast", databaseUrl)));
}
