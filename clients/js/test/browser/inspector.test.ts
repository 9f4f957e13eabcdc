/**
 * The inspector `rowcast dev` serves, in real Chromium: it connects as a
 * demo user with a token from `/dev/token`, joins a room, shows rows
 * written in SQL, keeps its list free of gaps and duplicates across a
 * SIGKILL and restart of the dev process, shows the `left` notice when
 * the room's access is revoked, and lists a webhook's attempts.
 */

import { once } from "node:events";
import { writeFileSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import type { Page } from "playwright-core";
import { afterAll, beforeAll, expect, it } from "vitest";

import { Relay, TestDatabase } from "../integration/relay.js";
import { ensureChromium, launchChromium } from "./chromium.js";

let db: TestDatabase;
let dev: Relay;
let browser: Awaited<ReturnType<typeof launchChromium>>;

beforeAll(async () => {
  ensureChromium();
  db = await TestDatabase.create();
  // `rowcast dev` seeds the demo data itself; its writer is off so every event is the test's.
  dev = await Relay.start(db, { ROWCAST_DEMO_INTERVAL: "0" }, "dev");
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await dev?.stop();
  await db?.drop();
});

/** The seqs the page lists for `room`, oldest first. */
const pageSeqs = (page: Page, room: string) =>
  page.$$eval(`#events tr[data-room="${room}"]`, (rows) => rows.map((row) => Number((row as HTMLElement).dataset.seq)).reverse());

/** Publishes a marker in `room`, waits until the page lists it, and returns the page's seqs then. */
async function settled(page: Page, room: string): Promise<number[]> {
  const seq = await db.barrier(room);
  await page.waitForSelector(`#events tr[data-room="${room}"][data-seq="${seq}"]`, { timeout: 30_000 });
  return pageSeqs(page, room);
}

it("shows live rows for a demo user, resumes across a restart with no gap or duplicate, and shows `left`", async () => {
  const page = await browser.context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (error) => errors.push(error.message));
  await page.goto(`${dev.httpUrl}/`);
  await page.waitForSelector('#status[data-status="open"]', { timeout: 20_000 });

  // Carol (3) is a stranger to content 1, which is public: she may join until it turns private.
  await page.selectOption("#user", "3");
  await page.click('#user-form button[type="submit"]');
  await page.waitForSelector('#user-current:text-is("3")', { timeout: 20_000 });
  await page.fill("#room", "content_1");
  await page.fill("#since", "0");
  await page.click('#join button[type="submit"]');

  const title = `From SQL ${Date.now()}`;
  await db.query("UPDATE content SET title = $1 WHERE id = 1", [title]);
  const row = page.locator('#events tr[data-room="content_1"][data-event="content-updated"]', { hasText: title });
  await row.waitFor({ timeout: 20_000 });
  expect(await row.locator("td").nth(5).textContent()).toMatch(/^-?\d+ ms$/);
  expect(await row.locator("ins").first().textContent()).toBe(JSON.stringify(title));
  expect(Number(await page.textContent("#head"))).toBeGreaterThanOrEqual(Number(await row.getAttribute("data-seq")));
  expect(await settled(page, "content_1")).toEqual(await db.roomSeqs("content_1"));

  await dev.kill();
  await db.updateContent(3, "while-down");
  await dev.start();
  await db.updateContent(3, "after");
  const seqs = await settled(page, "content_1");
  expect(seqs).toEqual(await db.roomSeqs("content_1"));
  expect(new Set(seqs).size).toBe(seqs.length);
  expect(seqs.length).toBeGreaterThanOrEqual(1 + 1 + 3 + 3 + 1);

  await db.query("UPDATE content SET visibility = 'private' WHERE id = 1");
  await page.waitForSelector('#rooms li[data-room="content_1"][data-left="true"]', { timeout: 20_000 });
  expect(await page.textContent('#rooms li[data-room="content_1"] .notice')).toBe("left: forbidden");
  expect(errors).toEqual([]);
});

it("lists a webhook's attempts: a failure to be retried, then the delivery", async () => {
  // A receiver that answers 500 to its first request and 204 after.
  let requests = 0;
  const receiver = createServer((request, response) => {
    request.resume();
    request.on("end", () => {
      requests += 1;
      response.writeHead(requests === 1 ? 500 : 204).end();
    });
  });
  receiver.listen(0, "127.0.0.1");
  await once(receiver, "listening");
  const { port } = receiver.address() as AddressInfo;
  const demoRoutes = readFileSync(fileURLToPath(new URL("../../../../routes.toml", import.meta.url)), "utf8");
  const routes = join(tmpdir(), `rowcast-inspector-${process.pid}-routes.toml`);
  writeFileSync(
    routes,
    `${demoRoutes}\n[[webhook]]\nname = "inspector"\nurl = "http://127.0.0.1:${port}/hook"\n` +
      `events = ["content-updated"]\nsecret_env = "ROWCAST_WEBHOOK_SECRET"\nallow_insecure = true\nbackoff = "100ms"\n`,
  );
  const hookDb = await TestDatabase.create();
  const hookDev = await Relay.start(
    hookDb,
    { ROWCAST_DEMO_INTERVAL: "0", ROWCAST_ROUTES: routes, ROWCAST_WEBHOOK_SECRET: "whsec_cm93Y2FzdC1pbnNwZWN0b3ItdGVzdA==" },
    "dev",
  );
  try {
    const page = await browser.context.newPage();
    await page.goto(`${hookDev.httpUrl}/`);
    await page.waitForSelector("#deliveries-empty");
    await hookDb.query("UPDATE content SET title = 'hooked' WHERE id = 1");
    const delivered = await page.waitForSelector('#deliveries tr[data-sink="webhook:inspector"][data-outcome="delivered"]', { timeout: 30_000 });
    const seq = Number(await delivered.getAttribute("data-seq"));
    const { rows: stored } = await hookDb.query<{ seq: string }>("SELECT seq FROM realtime.outbox WHERE event = 'content-updated'");
    expect(stored.map((row) => Number(row.seq))).toEqual([seq]);
    const rows = `#deliveries tr[data-sink="webhook:inspector"][data-seq="${seq}"]`;
    const retry = page.locator(`${rows}[data-outcome="retry"]`);
    expect(await retry.count()).toBe(1);
    const cells = await retry.locator("td").allTextContents();
    expect(cells.slice(1, 8)).toEqual(["webhook:inspector", "inspector", String(seq), "content-updated", "1", "retry", "500"]);
    expect(await page.locator("#deliveries-empty").count()).toBe(0);
    // The page never shows the receiver's URL.
    expect(await page.textContent("#deliveries")).not.toContain(String(port));
  } finally {
    await hookDev.stop();
    await hookDb.drop();
    receiver.close();
    rmSync(routes, { force: true });
  }
});
