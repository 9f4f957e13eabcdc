/**
 * Listening by event name on the core client (`client.on(name, listener)`),
 * with and without an events map: each stored event once across rooms, the
 * client's own `status` and `event` notifications kept apart.
 */

import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { createClient, type EventFrame, type FrameOf } from "../../src/index.js";
import { fakeWebSocket, settle } from "./fake-socket.js";
import { openHarness, stored } from "./harness.js";

beforeEach(() => void vi.useFakeTimers());
afterEach(() => void vi.useRealTimers());

/** An app's own map, as `rowcast types` writes one. */
interface ShopEvents {
  "order-placed": { data: { id: number; total_cents: number }; old?: never };
  "order-shipped": { data: { id: number; carrier: string | null }; old: { carrier?: string | null } };
}

describe("client.on(name)", () => {
  it("hands each stored event of that name once, whichever joined rooms it came through", async () => {
    const h = await openHarness();
    h.client.subscribe("order_1");
    h.client.subscribe("customer_7");
    const named: string[] = [];
    const every: string[] = [];
    h.client.on("order-placed", (frame) => named.push(`${frame.room}:${frame.seq}`));
    h.client.on("event", (frame) => every.push(`${frame.event}@${frame.room}`));
    h.fake.latest.push(stored("order_1", 1, "order-placed"));
    h.fake.latest.push(stored("customer_7", 1, "order-placed")); // the same event, its second room
    h.fake.latest.push(stored("order_1", 2, "order-shipped"));
    h.fake.latest.push({ type: "event", room: "order_1", event: "order-placed", from: "2", data: {} }); // ephemeral: no seq
    expect(named).toEqual(["order_1:1", "order_1:undefined"]);
    expect(every).toEqual(["order-placed@order_1", "order-placed@customer_7", "order-shipped@order_1", "order-placed@order_1"]);
  });

  it("gets nothing a subscription dropped as already delivered, and nothing after it stopped", async () => {
    const h = await openHarness();
    h.client.subscribe("order_1");
    const seqs: unknown[] = [];
    const stop = h.client.on("order-placed", (frame) => seqs.push(frame.seq));
    h.fake.latest.push(stored("order_1", 3, "order-placed"));
    h.fake.latest.push(stored("order_1", 3, "order-placed")); // a replay overlapping what was delivered
    stop();
    h.fake.latest.push(stored("order_1", 4, "order-placed"));
    expect(seqs).toEqual([3]);
  });

  it("keeps `status` and `event` for the client's own notifications", async () => {
    const h = await openHarness();
    h.client.subscribe("order_1");
    const statuses: unknown[] = [];
    const frames: EventFrame[] = [];
    h.client.on("status", (status) => statuses.push(status));
    h.client.on("event", (frame) => frames.push(frame));
    h.fake.latest.push(stored("order_1", 1, "status")); // an event that happens to be named `status`
    expect(statuses).toEqual([]);
    expect(frames.map((frame) => frame.event)).toEqual(["status"]);
  });

  it("forgets its listeners on close", async () => {
    const h = await openHarness();
    h.client.subscribe("order_1");
    const seen: unknown[] = [];
    h.client.on("order-placed", (frame) => seen.push(frame.seq));
    h.client.close();
    h.fake.latest.push(stored("order_1", 1, "order-placed"));
    expect(seen).toEqual([]);
  });

  it("types frames by the map given to createClient, and behaves the same at run time", async () => {
    const fake = fakeWebSocket();
    const client = createClient<ShopEvents>({ url: "ws://relay.test/v1/ws", token: "t", WebSocket: fake.WebSocket });
    await settle();
    fake.latest.open();
    const totals: number[] = [];
    const carriers: Array<string | null | undefined> = [];
    const frames: Array<FrameOf<ShopEvents>> = [];
    client.on("order-placed", (frame) => totals.push(frame.data.total_cents));
    client.on("order-shipped", (frame) => carriers.push(frame.old.carrier));
    client.subscribe("order_1", { onEvent: (frame) => frames.push(frame) });
    fake.latest.push({ type: "event", room: "order_1", event: "order-placed", seq: 1, data: { id: 1, total_cents: 995 } });
    fake.latest.push({ type: "event", room: "order_1", event: "order-shipped", seq: 2, data: { id: 1, carrier: "DHL" }, old: { carrier: null } });
    expect(totals).toEqual([995]);
    expect(carriers).toEqual([null]);
    expect(frames.map((frame) => (frame.event === "order-shipped" ? frame.data.carrier : frame.data.total_cents))).toEqual([995, "DHL"]);
    client.close();
  });
});
