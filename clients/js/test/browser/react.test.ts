/**
 * The React bindings in real Chromium against the real relay: under
 * StrictMode the room is joined exactly once, a row written in SQL shows up
 * on the page (through the demo's named hook and the core hook sharing its
 * connection), and unmounting closes the connection.
 */

import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, expect, it } from "vitest";

import { mintToken, Relay, TestDatabase } from "../integration/relay.js";
import { ensureChromium, launchChromium } from "./chromium.js";

let db: TestDatabase;
let relay: Relay;
let server: Server;
let browser: Awaited<ReturnType<typeof launchChromium>>;

/** Bundles the page with React's development build: StrictMode only double-mounts there. */
async function bundlePage(): Promise<string> {
  const result = await build({
    entryPoints: [fileURLToPath(new URL("./page.tsx", import.meta.url))],
    bundle: true,
    write: false,
    format: "esm",
    jsx: "automatic",
    define: { "process.env.NODE_ENV": '"development"' },
    logLevel: "silent",
  });
  return result.outputFiles[0]!.text;
}

/** Serves the page and its bundle on a free local port. */
async function servePage(script: string): Promise<Server> {
  const html = '<!doctype html><html><body><div id="root"></div><script type="module" src="/page.js"></script></body></html>';
  const http = createServer((request, response) => {
    const isScript = request.url === "/page.js";
    response.writeHead(200, { "content-type": isScript ? "text/javascript" : "text/html" });
    response.end(isScript ? script : html);
  });
  http.listen(0, "127.0.0.1");
  await once(http, "listening");
  return http;
}

beforeAll(async () => {
  ensureChromium();
  db = await TestDatabase.create();
  await db.seed();
  relay = await Relay.start(db);
  server = await servePage(await bundlePage());
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  server?.close();
  await relay?.stop();
  await db?.drop();
});

const sentJoins = (page: Page, room: string) =>
  page.evaluate((name) => (window as any).probe.sent.filter((f: any) => f.type === "join" && f.room === name).length, room);

it("joins once under StrictMode, shows a row written in SQL, and closes on unmount", async () => {
  const page = await browser.context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (error) => errors.push(error.message));
  const { port } = server.address() as AddressInfo;
  const query = new URLSearchParams({ server: relay.baseUrl, token: mintToken("2") });
  await page.goto(`http://127.0.0.1:${port}/?${query}`);

  await page.waitForSelector('#status[data-connected="true"]', { timeout: 20_000 });
  await page.waitForFunction(() => (window as any).probe.sent.some((f: any) => f.type === "join"), undefined, { timeout: 10_000 });

  const title = `From SQL ${Date.now()}`;
  await db.query("UPDATE content SET title = $1 WHERE id = 1", [title]);
  await page.waitForSelector(`#titles li:text-is("${title}")`, { timeout: 20_000 });
  await page.waitForSelector(`#core-titles li:text-is("${title}")`, { timeout: 20_000 });
  await page.waitForFunction(() => document.querySelector("#room-seq")?.textContent !== "none", undefined, { timeout: 10_000 });

  expect(await page.textContent("#status")).toBe("open");
  expect(await sentJoins(page, "content_1")).toBe(1);
  expect(await page.evaluate(() => (window as any).probe.sockets.length)).toBe(1);
  expect(await page.locator("#titles li").count()).toBe(1);
  expect(await page.locator("#core-titles li").count()).toBe(1);

  await page.evaluate(() => (window as any).probe.unmount());
  await page.waitForFunction(() => (window as any).probe.sockets[0].readyState === WebSocket.CLOSED, undefined, { timeout: 10_000 });
  expect(errors).toEqual([]);
});
