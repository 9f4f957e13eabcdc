/**
 * Exactly once, in order, across a SIGKILL and a SIGTERM of the relay:
 * two subscriptions to one room over one server join per connection.
 */

import { afterAll, beforeAll, expect, it } from "vitest";

import { createClient, type Status } from "../../src/index.js";
import { observedWebSocket } from "./observed.js";
import { mintToken, Relay, TestDatabase, waitFor } from "./relay.js";

let db: TestDatabase;
let relay: Relay;

beforeAll(async () => ({ db, relay } = await Relay.onSeededDatabase()));

afterAll(() => Relay.tearDown(relay, db));

it("delivers 400 events exactly once, in seq order, to two subscriptions across a crash and a restart", async () => {
  const observed = observedWebSocket();
  const tokenReasons: string[] = [];
  const statuses: Status[] = [];
  const client = createClient({
    url: relay.wsUrl,
    token: ({ reason }) => {
      tokenReasons.push(reason);
      return mintToken("2");
    },
    WebSocket: observed.WebSocket,
    reconnect: { minDelayMs: 50, maxDelayMs: 500 },
  });
  client.on("status", (status) => statuses.push(status));
  const first: number[] = [];
  const second: number[] = [];
  client.subscribe("content_1", { onEvent: (frame) => frame.event !== "barrier" && first.push(frame.seq!) });
  client.subscribe("content_1", { onEvent: (frame) => frame.event !== "barrier" && second.push(frame.seq!) });
  await waitFor("the join reply", () => observed.joinReply("content_1")?.ok);

  await db.updateContent(100, "before-kill");
  await relay.kill();
  await db.updateContent(200, "while-down");
  await relay.start();
  await waitFor("300 events in both subscriptions", () => first.length >= 300 && second.length >= 300, 30_000);

  const openBefore = observed.connections.length;
  await relay.stop();
  await waitFor("the 1001 close", () => observed.closeCodes().includes(1001));
  await relay.start();
  await db.updateContent(100, "after-restart");
  await db.barrier("content_1");
  await waitFor("400 events in both subscriptions", () => first.length >= 400 && second.length >= 400, 30_000);
  await waitFor("the barrier through the client", () => client.lastSeq("content_1")! > first[first.length - 1]!);

  const stored = (await db.roomSeqs("content_1")).filter((seq) => seq <= first[first.length - 1]!);
  expect(stored).toHaveLength(400);
  expect(first).toEqual(stored);
  expect(second).toEqual(stored);

  // One server join per welcomed connection for the two subscriptions, none on a refused one.
  expect(observed.joinsPerConnection("content_1")).toEqual(observed.connections.map((socket) => (socket.welcomed ? 1 : 0)));
  expect(observed.connections.length).toBeGreaterThan(openBefore);
  expect(observed.connections.filter((socket) => socket.welcomed).length).toBeGreaterThanOrEqual(3);
  // The token function is called on every connection attempt.
  expect(tokenReasons).toHaveLength(observed.connections.length);
  // Status: open, then each drop goes reconnecting and comes back open.
  expect(statuses[0]).toBe("open");
  expect(statuses.filter((status) => status === "reconnecting").length).toBeGreaterThanOrEqual(2);
  expect(statuses.join(" ")).toMatch(/^open( reconnecting open)+$/);
  client.close();
});
