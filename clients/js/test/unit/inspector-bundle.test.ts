/**
 * The inspector's script is committed (src/dev/inspector.js, embedded by
 * `rowcast dev`) so the Rust build needs no node: it must be exactly what
 * `npm run build` makes from clients/js/inspector and the SDK.
 */

import { readFileSync } from "node:fs";

import { expect, it } from "vitest";

import { bundle, OUTPUT } from "../../inspector/build.mjs";

it("the committed inspector bundle is up to date (run `npm run build` and commit src/dev/inspector.js)", async () => {
  const built: string = await bundle();
  expect(built.length).toBeGreaterThan(1000);
  expect(readFileSync(OUTPUT, "utf8")).toBe(built);
});
