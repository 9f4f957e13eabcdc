/**
 * src/demo/events.ts, the demo's events map, is what `rowcast types` (the
 * binary under test, with the repository's routes.toml built in) prints for
 * the demo schema, so the demo entry point's event list and payload types
 * are never edited by hand. With ROWCAST_UPDATE_DEMO_EVENTS=1 the test
 * writes the file instead of comparing.
 */

import { readFileSync, writeFileSync } from "node:fs";

import { afterAll, beforeAll, expect, it } from "vitest";

import { declarations, demoEvents, OUTPUT } from "../../scripts/demo-events.mjs";
import { TestDatabase } from "./relay.js";

let db: TestDatabase;

beforeAll(async () => {
  db = await TestDatabase.create();
});

afterAll(async () => {
  await db?.drop();
});

it("the committed demo events are what `rowcast types` makes (regenerate: ROWCAST_UPDATE_DEMO_EVENTS=1 cargo test --test js_client)", () => {
  const bin = process.env.ROWCAST_BIN;
  if (!bin) throw new Error("ROWCAST_BIN is not set; `cargo test --test js_client` sets it");
  const made = demoEvents(declarations(bin, db.url));
  if (process.env.ROWCAST_UPDATE_DEMO_EVENTS === "1") writeFileSync(OUTPUT, made);
  expect(readFileSync(OUTPUT, "utf8")).toBe(made);
});
