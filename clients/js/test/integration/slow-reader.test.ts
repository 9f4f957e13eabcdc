/**
 * A client that stops reading is closed by the relay with 4008 once its
 * send queue overflows; when it reads again it gets what the socket held,
 * then the close, reconnects and resumes with nothing lost or repeated.
 */

import { afterAll, beforeAll, expect, it } from "vitest";

import { createClient, type Status } from "../../src/index.js";
import { observedWebSocket } from "./observed.js";
import { mintToken, Relay, TestDatabase, waitFor } from "./relay.js";

let db: TestDatabase;
let relay: Relay;

beforeAll(async () => {
  db = await TestDatabase.create();
  await db.seed();
  // A small send queue, and batches below it so one commit cannot overflow a healthy reader.
  relay = await Relay.start(db, { ROWCAST_SEND_QUEUE: "16", ROWCAST_BATCH_SIZE: "8" });
});

afterAll(async () => {
  await relay?.stop();
  await db?.drop();
});

/** Stores `count` events of about 32 KiB each in content_1, in one transaction. */
async function publishLarge(count: number): Promise<void> {
  await db.query(
    `SELECT realtime.publish(ARRAY['content_1'], 'bulk', jsonb_build_object('i', g, 'pad', repeat('x', 32768)))
     FROM generate_series(1, $1::int) g`,
    [count],
  );
}

it("resumes after a 4008 close with every event exactly once, in order", async () => {
  const observed = observedWebSocket();
  const statuses: Status[] = [];
  const client = createClient({
    url: relay.wsUrl,
    token: () => mintToken("2"),
    WebSocket: observed.WebSocket,
    reconnect: { minDelayMs: 50, maxDelayMs: 500 },
  });
  client.on("status", (status) => statuses.push(status));
  const seqs: number[] = [];
  client.subscribe("content_1", { onEvent: (frame) => seqs.push(frame.seq!) });
  await waitFor("the join reply", () => observed.joinReply("content_1")?.ok);

  const stalled = observed.latest;
  stalled.pause();
  const overflowsBefore = await relay.metric("rowcast_queue_overflows_total");
  await waitFor(
    "the relay to find the stalled reader's queue full",
    async () => {
      await publishLarge(25);
      return (await relay.metric("rowcast_queue_overflows_total")) > overflowsBefore;
    },
    60_000,
  );
  stalled.resume();
  await waitFor("the 4008 close", () => stalled.closeCode === 4008, 30_000);
  await waitFor("a new connection", () => observed.connections.length > 1 && observed.latest.welcomed);

  await db.updateContent(5, "after-4008");
  const barrier = await db.barrier("content_1");
  await waitFor("the barrier through the client", () => seqs[seqs.length - 1] === barrier, 30_000);

  expect(seqs).toEqual(await db.roomSeqs("content_1"));
  expect(observed.latest.sent.find((frame) => frame.type === "join")?.since).toBeGreaterThan(0);
  expect(statuses.slice(0, 3)).toEqual(["open", "reconnecting", "open"]);
  client.close();
});
