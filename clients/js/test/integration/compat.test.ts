/**
 * The seed's calls, unchanged but for the import, against the real relay,
 * through the built package (`@rowcast/client/compat` from dist/).
 */

import { afterAll, beforeAll, expect, it } from "vitest";

import { createClient, type EventFrame } from "@rowcast/client";
import realtimeClient from "@rowcast/client/compat";
import { observedWebSocket } from "./observed.js";
import { mintToken, Relay, TestDatabase, waitFor } from "./relay.js";

let db: TestDatabase;
let relay: Relay;
const observed = observedWebSocket();

beforeAll(async () => {
  db = await TestDatabase.create();
  await db.seed();
  relay = await Relay.start(db);
  // A browser has a global WebSocket; Node 20 does not, so the test provides one.
  (globalThis as { WebSocket?: unknown }).WebSocket = observed.WebSocket;
});

afterAll(async () => {
  realtimeClient.disconnect();
  delete (globalThis as { WebSocket?: unknown }).WebSocket;
  await relay?.stop();
  await db?.drop();
});

it("receives the catalog's events and sends messages with the seed's calls", async () => {
  const created: EventFrame[] = [];
  const updated: EventFrame[] = [];
  const connects: string[] = [];
  realtimeClient.on("connect", () => connects.push("connect"));
  realtimeClient.on("content-created", (data: EventFrame) => created.push(data));
  realtimeClient.on("content-updated", (data: EventFrame) => updated.push(data));

  realtimeClient.connect(relay.baseUrl, mintToken("1"));
  realtimeClient.joinContentRoom(1);
  realtimeClient.joinUserRoom(1);
  await waitFor("both joins", () => observed.joinReply("content_1")?.ok && observed.joinReply("user_1")?.ok);
  expect(observed.latest.url.startsWith(`${relay.wsUrl}?token=`)).toBe(true);
  expect(connects).toEqual(["connect"]);

  // content_1 and user_1 both get content-updated (one seq): the handler sees it once.
  await db.query("UPDATE content SET title = 'Renamed' WHERE id = 1");
  await db.query("INSERT INTO content (author_id, title) VALUES (1, 'Second book')");
  await db.barrier("user_1");
  await waitFor("the barrier through the socket", () => observed.latest.seen.some((frame) => frame.event === "barrier"));
  expect(updated.map((frame) => frame.data.title)).toEqual(["Renamed"]);
  expect(created.map((frame) => [frame.room, frame.data.title])).toEqual([["user_1", "Second book"]]);
  expect(observed.latest.seen.filter((frame) => frame.event === "content-updated")).toHaveLength(2);

  // Another connection of user 1 receives the ephemeral message sent to user_1.
  const other = createClient({ url: relay.wsUrl, token: mintToken("1"), WebSocket: observed.WebSocket });
  const messages: EventFrame[] = [];
  other.subscribe("user_1", { onEvent: (frame) => frame.event === "message" && messages.push(frame) });
  await waitFor("the other connection's join", () => observed.connections[1] && observed.joinReply("user_1", observed.connections[1])?.ok);
  await expect(realtimeClient.sendMessage(1, "Hello!")).resolves.toBe(true);
  await waitFor("the message", () => messages.length === 1);
  expect(messages[0]).toMatchObject({ room: "user_1", event: "message", from: "1", data: { text: "Hello!" } });
  expect(messages[0]!.seq).toBeUndefined();
  other.close();

  realtimeClient.disconnect();
  expect(realtimeClient.connected).toBe(false);
  await expect(realtimeClient.sendMessage(1, "after disconnect")).resolves.toBe(false);
});
