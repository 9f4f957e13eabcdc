import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import type { EventFrame } from "../../src/protocol.js";
import { settle } from "./fake-socket.js";
import { harness, openHarness, reconnect, stored } from "./harness.js";

beforeEach(() => void vi.useFakeTimers());
afterEach(() => void vi.useRealTimers());

const seqs = (frames: EventFrame[]) => frames.map((frame) => frame.seq);

describe("reference counting", () => {
  it("joins once for two subscriptions and leaves only after the last one", async () => {
    const h = await openHarness();
    const a = h.client.subscribe("content_1");
    const b = h.client.subscribe("content_1");
    expect(h.fake.latest.sentOf("join")).toHaveLength(1);
    a.unsubscribe();
    await vi.advanceTimersByTimeAsync(10);
    expect(h.fake.latest.sentOf("leave")).toHaveLength(0);
    b.unsubscribe();
    b.unsubscribe(); // idempotent: must not touch another subscription's count
    await vi.advanceTimersByTimeAsync(10);
    expect(h.fake.latest.sentOf("leave")).toEqual([expect.objectContaining({ room: "content_1" })]);
  });

  it("survives a StrictMode-style unsubscribe and resubscribe without leaving or joining again", async () => {
    const h = await openHarness();
    h.client.subscribe("content_1").unsubscribe();
    h.client.subscribe("content_1");
    await vi.advanceTimersByTimeAsync(50);
    expect(h.fake.latest.sentOf("join")).toHaveLength(1);
    expect(h.fake.latest.sentOf("leave")).toHaveLength(0);
  });

  it("waits leaveDelayMs before leaving", async () => {
    const h = await openHarness({ leaveDelayMs: 200 });
    h.client.subscribe("content_1").unsubscribe();
    await vi.advanceTimersByTimeAsync(150);
    expect(h.fake.latest.sentOf("leave")).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(100);
    expect(h.fake.latest.sentOf("leave")).toHaveLength(1);
  });

  it("joins rooms subscribed before the connection opened, once each, when it opens", async () => {
    const h = harness();
    h.client.subscribe("content_1");
    h.client.subscribe("content_1");
    h.client.subscribe("user_1");
    await settle();
    h.fake.latest.open({ head: 5 });
    expect(h.fake.latest.sentOf("join").map((frame) => frame.room)).toEqual(["content_1", "user_1"]);
  });

  it("rejoins every subscribed room once per connection, but not one whose leave was pending", async () => {
    const h = await openHarness({ leaveDelayMs: 5_000 });
    h.client.subscribe("content_1");
    h.client.subscribe("content_1");
    h.client.subscribe("user_1").unsubscribe();
    await reconnect(h);
    expect(h.fake.latest.sentOf("join").map((frame) => frame.room)).toEqual(["content_1"]);
  });
});

describe("exactly once, in seq order", () => {
  it("drops stored events at or below the cursor, whichever room copy or replay they come from", async () => {
    const h = await openHarness({}, 10);
    const a: EventFrame[] = [];
    const b: EventFrame[] = [];
    h.client.subscribe("content_1", { since: 10, onEvent: (frame) => a.push(frame) });
    h.client.subscribe("content_1", { onEvent: (frame) => b.push(frame) });
    for (const seq of [11, 12, 12, 11, 13]) h.fake.latest.push(stored("content_1", seq));
    await reconnect(h);
    expect(h.fake.latest.last("join").since).toBe(13);
    // The new connection's replay overlaps what was delivered (a relay that replays from older).
    for (const seq of [12, 13, 14, 15]) h.fake.latest.push(stored("content_1", seq));
    expect(seqs(a)).toEqual([11, 12, 13, 14, 15]);
    expect(seqs(b)).toEqual([11, 12, 13, 14, 15]);
  });

  it("dedupes the events that arrive while the join is replaying, before its reply", async () => {
    const h = await openHarness({}, 20);
    const got: EventFrame[] = [];
    h.client.subscribe("content_1", { since: 15, onEvent: (frame) => got.push(frame) });
    for (const seq of [16, 17, 17, 18]) h.fake.latest.push(stored("content_1", seq));
    h.fake.latest.reply("join", { room: "content_1", head: 20, replayed: 3 });
    h.fake.latest.push(stored("content_1", 18));
    h.fake.latest.push(stored("content_1", 21));
    expect(seqs(got)).toEqual([16, 17, 18, 21]);
  });

  it("passes ephemeral events through without touching the cursor", async () => {
    const h = await openHarness({}, 3);
    const got: EventFrame[] = [];
    h.client.subscribe("content_1", { onEvent: (frame) => got.push(frame) });
    const typing = { type: "event", room: "content_1", event: "user-typing", from: "2", data: { typing: true } };
    h.fake.latest.push(typing);
    h.fake.latest.push(typing);
    expect(got).toHaveLength(2);
    expect(h.client.lastSeq("content_1")).toBeUndefined();
  });

  it("joins live-only from the newest seq it knows, so a reconnect before any event loses nothing", async () => {
    const h = await openHarness({}, 40);
    h.client.subscribe("content_1");
    expect(h.fake.latest.last("join").since).toBe(40);
    h.fake.latest.push(stored("user_1", 45)); // another room's event moves the known head
    h.client.subscribe("content_2");
    expect(h.fake.latest.last("join", "content_2").since).toBe(45);
    await reconnect(h, 1006, 50);
    expect(h.fake.latest.last("join", "content_1").since).toBe(40);
  });

  it("keeps delivering to the other subscriptions when one handler throws, and rethrows it apart", async () => {
    const h = await openHarness();
    const got: number[] = [];
    h.client.subscribe("content_1", {
      onEvent: () => {
        throw new Error("app bug");
      },
    });
    h.client.subscribe("content_1", { onEvent: (frame) => got.push(frame.seq as number) });
    h.fake.latest.push(stored("content_1", 1));
    h.fake.latest.push(stored("content_1", 2));
    expect(got).toEqual([1, 2]);
    h.client.close();
    expect(() => vi.runOnlyPendingTimers()).toThrow("app bug");
  });
});

describe("what the relay says about a room", () => {
  it("reports a gap from the join reply", async () => {
    const h = await openHarness({}, 900);
    const gaps: unknown[] = [];
    h.client.subscribe("content_1", { since: 5, onGap: (info) => gaps.push(info) });
    h.fake.latest.reply("join", { room: "content_1", head: 900, replayed: 100, gap: true });
    await vi.advanceTimersByTimeAsync(0);
    expect(gaps).toEqual([{ room: "content_1", since: 5, head: 900 }]);
  });

  it("does not report a gap for a reply without one", async () => {
    const h = await openHarness({}, 10);
    const onGap = vi.fn();
    h.client.subscribe("content_1", { since: 5, onGap });
    h.fake.latest.reply("join", { room: "content_1", head: 10, replayed: 5 });
    await vi.advanceTimersByTimeAsync(0);
    expect(onGap).not.toHaveBeenCalled();
  });

  it("tells every subscription about `left`, drops the room's frames and never rejoins it", async () => {
    const h = await openHarness();
    const reasons: string[] = [];
    const got: EventFrame[] = [];
    h.client.subscribe("content_2", { onLeft: (reason) => reasons.push(reason), onEvent: (frame) => got.push(frame) });
    h.client.subscribe("content_2", { onLeft: (reason) => reasons.push(reason) });
    h.client.subscribe("user_1");
    h.fake.latest.push({ type: "left", room: "content_2", reason: "forbidden" });
    h.fake.latest.push(stored("content_2", 3));
    expect(reasons).toEqual(["forbidden", "forbidden"]);
    expect(got).toHaveLength(0);
    await reconnect(h);
    expect(h.fake.latest.sentOf("join").map((frame) => frame.room)).toEqual(["user_1"]);
    h.client.subscribe("content_2"); // the app asks again: that is a new join
    expect(h.fake.latest.sentOf("join").map((frame) => frame.room)).toEqual(["user_1", "content_2"]);
  });

  it("gives up a forbidden room with onError and retries one the relay could not authorize", async () => {
    const h = await openHarness();
    const errors: string[] = [];
    h.client.subscribe("diary_9", { onError: (error) => errors.push(error.code) });
    h.fake.latest.refuse("join", "forbidden", "diary_9");
    h.client.subscribe("content_1");
    h.fake.latest.refuse("join", "internal", "content_1");
    await vi.advanceTimersByTimeAsync(0);
    expect(errors).toEqual(["forbidden"]);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(h.fake.latest.sentOf("join").map((frame) => frame.room)).toEqual(["diary_9", "content_1", "content_1"]);
  });
});
