import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { createClient } from "../../src/client.js";
import { RowcastError } from "../../src/protocol.js";
import { fakeWebSocket, settle } from "./fake-socket.js";
import { harness, openHarness, reconnect } from "./harness.js";

beforeEach(() => void vi.useFakeTimers());
afterEach(() => void vi.useRealTimers());

describe("status", () => {
  it("goes connecting, open, reconnecting, open, closed", async () => {
    const h = harness();
    expect(h.client.status).toBe("connecting");
    await settle();
    h.fake.latest.open();
    await reconnect(h, 1001);
    h.client.close();
    expect(h.statuses).toEqual(["open", "reconnecting", "open", "closed"]);
  });

  it("stays closed after close(): the socket is closed and never replaced", async () => {
    const h = await openHarness();
    h.client.close();
    await vi.advanceTimersByTimeAsync(20_000);
    expect(h.fake.latest.closedWith).toBe(1000);
    expect(h.fake.sockets).toHaveLength(1);
    expect(() => h.client.subscribe("content_1")).toThrow(/closed/);
  });

  it("closes during a pending reconnect without connecting again", async () => {
    const h = await openHarness();
    h.fake.latest.serverClose(1001);
    h.client.close();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(h.fake.sockets).toHaveLength(1);
    expect(h.client.status).toBe("closed");
  });
});

describe("emit", () => {
  it("rejects with `offline` while connecting, reconnecting or closed, and never sends it later", async () => {
    const h = harness();
    await expect(h.client.emit("content_1", "user-typing", { typing: true })).rejects.toMatchObject({ code: "offline" });
    await settle();
    h.fake.latest.open();
    h.fake.latest.serverClose(1006);
    await expect(h.client.emit("content_1", "user-typing")).rejects.toBeInstanceOf(RowcastError);
    await vi.advanceTimersByTimeAsync(1_000);
    h.fake.latest.open();
    expect(h.fake.sockets.flatMap((socket) => socket.sentOf("emit"))).toHaveLength(0);
    h.client.close();
    await expect(h.client.emit("content_1", "user-typing")).rejects.toMatchObject({ code: "offline" });
  });

  it("resolves with the ok reply and rejects with the relay's code, matching replies by ref", async () => {
    const h = await openHarness();
    const first = h.client.emit("content_1", "user-typing", { typing: true });
    const second = h.client.emit("content_2", "message", { text: "hi" });
    const [a, b] = h.fake.latest.sentOf("emit");
    expect(a!.ref).not.toBe(b!.ref);
    h.fake.latest.push({ type: "reply", ref: b!.ref, ok: false, error: { code: "forbidden", message: "join first" } });
    h.fake.latest.push({ type: "reply", ref: a!.ref, ok: true, throttled: true });
    await expect(second).rejects.toMatchObject({ code: "forbidden", message: "join first" });
    await expect(first).resolves.toMatchObject({ ok: true, throttled: true });
  });

  it("rejects a request still waiting when the connection ends", async () => {
    const h = await openHarness();
    const pending = h.client.emit("content_1", "message", { text: "hi" });
    h.fake.latest.serverClose(1001);
    await expect(pending).rejects.toMatchObject({ code: "disconnected" });
  });
});

describe("heartbeat", () => {
  it("pings every half interval and stays open while pongs come back", async () => {
    const h = await openHarness();
    h.fake.latest.push({ type: "welcome" }); // a second welcome is ignored
    const socket = h.fake.latest;
    await vi.advanceTimersByTimeAsync(60_000);
    expect(socket.sentOf("ping").length).toBeGreaterThanOrEqual(4);
    expect(h.client.status).toBe("open");
    expect(h.fake.sockets).toHaveLength(1);
  });

  it("drops a silent connection within one and a half intervals and reconnects", async () => {
    const h = harness();
    await settle();
    const socket = h.fake.latest;
    socket.answersPings = false;
    socket.open({ heartbeat_ms: 2_000 });
    await vi.advanceTimersByTimeAsync(1_000);
    expect(socket.sentOf("ping")).toHaveLength(1);
    expect(h.client.status).toBe("open");
    await vi.advanceTimersByTimeAsync(1_999);
    expect(socket.terminated).toBe(true);
    expect(h.client.status).toBe("reconnecting");
    await vi.advanceTimersByTimeAsync(1_000);
    expect(h.fake.sockets).toHaveLength(2);
    expect(h.reasons).toEqual(["connect", "connect"]);
  });

  it("counts any frame as life, not only pongs", async () => {
    const h = harness();
    await settle();
    const socket = h.fake.latest;
    socket.answersPings = false;
    socket.open({ heartbeat_ms: 2_000 });
    for (let i = 0; i < 10; i++) {
      await vi.advanceTimersByTimeAsync(900);
      socket.push({ type: "event", room: "broadcast", event: "announcement", seq: i + 1, data: {} });
    }
    expect(h.client.status).toBe("open");
  });
});

describe("connecting", () => {
  it("abandons an upgrade with no welcome after connectTimeoutMs and tries again", async () => {
    const h = harness({ connectTimeoutMs: 3_000 });
    await settle();
    await vi.advanceTimersByTimeAsync(3_000);
    expect(h.fake.sockets[0]!.terminated).toBe(true);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(h.fake.sockets).toHaveLength(2);
    expect(h.reasons).toEqual(["connect", "connect"]);
  });

  it("refuses a URL that is not ws:// or wss://, and a missing WebSocket", () => {
    const { WebSocket } = fakeWebSocket();
    expect(() => createClient({ url: "http://relay.test/v1/ws", token: "t", WebSocket })).toThrow(/ws:\/\//);
    expect(() => createClient({ url: "relay", token: "t", WebSocket })).toThrow(/not a URL/);
    expect(() => createClient({ url: "ws://relay.test/v1/ws", token: "t" })).toThrow(/WebSocket/);
  });

  it("hands every delivered event, and those of rooms nobody joined, to `event` listeners", async () => {
    const h = await openHarness();
    const events: unknown[] = [];
    h.client.on("event", (frame) => events.push([frame.room, frame.seq]));
    h.client.subscribe("content_1", { since: 0 });
    h.fake.latest.push({ type: "event", room: "broadcast", event: "announcement", seq: 1, data: {} });
    h.fake.latest.push({ type: "event", room: "content_1", event: "content-updated", seq: 2, data: {} });
    h.fake.latest.push({ type: "event", room: "content_1", event: "content-updated", seq: 2, data: {} });
    expect(events).toEqual([
      ["broadcast", 1],
      ["content_1", 2],
    ]);
  });
});
