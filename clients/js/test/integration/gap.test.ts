/**
 * A cursor older than what the relay retains: the join reply says `gap`,
 * `onGap` fires, and the replay starts at the oldest retained event.
 * Retention is applied by hand, with the statements of the relay's
 * retention (src/outbox/retention.rs), so that no event the test writes
 * (presence included) can move the cut while it runs.
 */

import { afterAll, beforeAll, expect, it } from "vitest";

import { createClient, memoryCursors, type GapInfo } from "../../src/index.js";
import { observedWebSocket } from "./observed.js";
import { mintToken, Relay, TestDatabase, waitFor } from "./relay.js";

let db: TestDatabase;
let relay: Relay;

beforeAll(async () => ({ db, relay } = await Relay.onSeededDatabase()));

/** Removes the stored events with `seq < cut`, as the relay's retention does. */
async function retainFrom(cut: number): Promise<void> {
  await db.query(
    `WITH gone AS (DELETE FROM realtime.outbox WHERE seq < $1 RETURNING seq),
          rooms AS (DELETE FROM realtime.outbox_rooms WHERE seq < $1)
     UPDATE realtime.state SET oldest = greatest(oldest, $1)`,
    [cut],
  );
}

afterAll(() => Relay.tearDown(relay, db));

it("reports a gap when retention removed the events after the stored cursor", async () => {
  const cursors = memoryCursors();
  const options = { url: relay.wsUrl, token: () => mintToken("2"), cursors };

  const before = observedWebSocket();
  const first = createClient({ ...options, WebSocket: before.WebSocket });
  const seen: number[] = [];
  first.subscribe("content_1", { onEvent: (frame) => seen.push(frame.seq!) });
  await waitFor("the first join reply", () => before.joinReply("content_1")?.ok);
  await db.updateContent(3, "seen");
  await waitFor("three events", () => seen.length === 3);
  first.close();
  const cursor = cursors.get("content_1")!;
  expect(cursor).toBe(seen[2]);

  await db.updateContent(20, "missed");
  await db.barrier("content_1");
  const missed = (await db.roomSeqs("content_1")).filter((seq) => seq > cursor);
  await retainFrom(missed[10]!);
  const retained = missed.slice(10);

  const after = observedWebSocket();
  const second = createClient({ ...options, WebSocket: after.WebSocket });
  const gaps: GapInfo[] = [];
  const replayed: number[] = [];
  second.subscribe("content_1", { onGap: (info) => gaps.push(info), onEvent: (frame) => replayed.push(frame.seq!) });
  await waitFor("onGap", () => gaps.length > 0);

  expect(after.latest.sent.find((frame) => frame.type === "join")?.since).toBe(cursor);
  expect(gaps).toEqual([{ room: "content_1", since: cursor, head: expect.any(Number) }]);
  expect(retained.length).toBeGreaterThan(0);
  expect(replayed).toEqual(retained);
  expect(second.lastSeq("content_1")).toBe(retained[retained.length - 1]);
  second.close();
});
