/**
 * Protocol 1.1 `left`: when a commit takes a member's right to a room away,
 * the relay removes it; the client tells the room's subscriptions, receives
 * nothing more of the room, and does not rejoin it after a reconnect.
 */

import { afterAll, beforeAll, expect, it } from "vitest";

import { createClient, type EventFrame } from "../../src/index.js";
import { observedWebSocket } from "./observed.js";
import { mintToken, Relay, TestDatabase, waitFor } from "./relay.js";

let db: TestDatabase;
let relay: Relay;

beforeAll(async () => {
  db = await TestDatabase.create();
  await db.seed();
  await db.query("INSERT INTO content (id, author_id, title, visibility) VALUES (2, 1, 'Open for now', 'public')");
  relay = await Relay.start(db);
});

afterAll(async () => {
  await relay?.stop();
  await db?.drop();
});

it("reports left, drops the room and does not rejoin it after a reconnect", async () => {
  const observed = observedWebSocket();
  const client = createClient({
    url: relay.wsUrl,
    token: () => mintToken("3"), // carol: neither the author nor a friend
    WebSocket: observed.WebSocket,
    reconnect: { minDelayMs: 50, maxDelayMs: 500 },
  });
  const reasons: string[] = [];
  const content: EventFrame[] = [];
  const own: EventFrame[] = [];
  client.subscribe("content_2", { onLeft: (reason) => reasons.push(reason), onEvent: (frame) => content.push(frame) });
  client.subscribe("user_3", { onEvent: (frame) => own.push(frame) });
  await waitFor("both joins", () => observed.joinReply("content_2")?.ok && observed.joinReply("user_3")?.ok);

  await db.query("UPDATE content SET visibility = 'private' WHERE id = 2");
  await waitFor("onLeft", () => reasons.length > 0, 10_000);
  expect(reasons).toEqual(["forbidden"]);

  // A change to the room, then a marker in a room still joined: once the marker is in, nothing of the room came.
  const before = content.length;
  await db.query("UPDATE content SET title = 'Private now' WHERE id = 2");
  await db.query("INSERT INTO notifications (user_id, kind, body) VALUES (3, 'marker', 'm')");
  await waitFor("the marker", () => own.some((frame) => frame.event === "notification"));
  expect(content).toHaveLength(before);
  const seen = observed.latest.seen;
  const leftAt = seen.findIndex((frame) => frame.type === "left");
  expect(seen.slice(leftAt + 1).filter((frame) => frame.room === "content_2")).toEqual([]);

  await relay.stop();
  await relay.start();
  await waitFor("a welcomed second connection", () => observed.connections.length > 1 && client.status === "open");
  await waitFor("the rejoin of user_3", () => observed.joinReply("user_3")?.ok);
  expect(observed.latest.sent.filter((frame) => frame.type === "join").map((frame) => frame.room)).toEqual(["user_3"]);
  client.close();
});
