/**
 * The demo catalog stays what the repository's routes.toml says, and stays
 * in its own entry point: every routed event is in the generated map
 * (src/demo/events.ts, checked against `rowcast types` by an integration
 * test), every room kind the routes write to has a joiner, and no file of
 * the core names a demo event.
 */

import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

import { describe, expect, it } from "vitest";

import { CATALOG_EVENTS, CLIENT_EVENTS, ROOM_KINDS } from "../../src/demo/catalog.js";
import { ROWCAST_EVENT_NAMES } from "../../src/demo/events.js";

const ROUTES = readFileSync(fileURLToPath(new URL("../../../../routes.toml", import.meta.url)), "utf8");
const SRC = fileURLToPath(new URL("../../src/", import.meta.url));

/** Events the relay publishes itself, with no route. */
const RELAY_EVENTS = ["user-status-changed"];

/** The text of routes.toml without its comments. */
const routes = ROUTES.split("\n")
  .filter((line) => !line.trimStart().startsWith("#"))
  .join("\n");

describe("the generated demo events", () => {
  it("are the events of routes.toml and the relay's own (else regenerate src/demo/events.ts, see scripts/demo-events.mjs)", () => {
    const routed = [...routes.matchAll(/^event\s*=\s*"([^"]+)"/gm)].map((match) => match[1]);
    expect(routed.length).toBeGreaterThan(0);
    expect([...ROWCAST_EVENT_NAMES].sort()).toEqual([...new Set([...routed, ...RELAY_EVENTS])].sort());
  });

  it("make the catalog together with the client events, each name once", () => {
    expect(CATALOG_EVENTS).toEqual([...ROWCAST_EVENT_NAMES, ...CLIENT_EVENTS]);
    expect(new Set(CATALOG_EVENTS).size).toBe(CATALOG_EVENTS.length);
  });

  it("go to rooms whose kinds all have a joiner", () => {
    const kinds = new Set([...routes.matchAll(/"([a-z]+)_\{/g)].map((match) => match[1]));
    expect([...kinds].sort()).toEqual([...ROOM_KINDS].sort());
  });
});

/** Every source file outside src/demo/, relative to src/. */
function coreFiles(dir = SRC): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === "demo" ? [] : coreFiles(path);
    return entry.name.endsWith(".ts") ? [relative(SRC, path)] : [];
  });
}

describe("the core", () => {
  it("names no demo event: they live in src/demo/ only", () => {
    const files = coreFiles();
    expect(files).toContain("client.ts");
    const found = files.flatMap((file) => {
      const text = readFileSync(join(SRC, file), "utf8");
      return CATALOG_EVENTS.filter((event) => {
        // Names of one word (`message`, `notification`) count only as a string or code span; the others anywhere.
        const pattern = event.includes("-") ? event : `["'\`]${event}["'\`]`;
        return new RegExp(pattern).test(text);
      }).map((event) => `${file}: ${event}`);
    });
    expect(found).toEqual([]);
  });
});
