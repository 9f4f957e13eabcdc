/** A client over the fake socket, and small helpers the unit tests share. */

import { vi } from "vitest";

import { createClient, type ClientOptions, type RowcastClient, type Status } from "../../src/client.js";
import type { EventFrame } from "../../src/protocol.js";
import type { TokenReason } from "../../src/token.js";
import { fakeWebSocket, settle } from "./fake-socket.js";

/** A JWT-shaped string with the given `exp` (the client never verifies signatures). */
export function jwt(exp: number, sub = "1"): string {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub, exp })}.signature`;
}

export interface Harness {
  client: RowcastClient;
  fake: ReturnType<typeof fakeWebSocket>;
  /** The reason of every token request, in order. */
  reasons: TokenReason[];
  statuses: Status[];
}

/** A client with fast, bounded reconnect delays, its fake sockets, and what it asked and reported. */
export function harness(options: Partial<ClientOptions> = {}): Harness {
  const fake = fakeWebSocket();
  const reasons: TokenReason[] = [];
  const statuses: Status[] = [];
  const client = createClient({
    url: "ws://relay.test/v1/ws",
    token: ({ reason }) => {
      reasons.push(reason);
      return `token-${reasons.length}`;
    },
    WebSocket: fake.WebSocket,
    reconnect: { minDelayMs: 100, maxDelayMs: 1_000, stableAfterMs: 5_000 },
    ...options,
  });
  client.on("status", (status) => statuses.push(status));
  return { client, fake, reasons, statuses };
}

/** A harness whose first connection is open (fake timers must be on). */
export async function openHarness(options: Partial<ClientOptions> = {}, head = 0): Promise<Harness> {
  const h = harness(options);
  await settle();
  h.fake.latest.open({ head });
  return h;
}

/** The relay drops the connection; the client reconnects after its backoff and gets a welcome. */
export async function reconnect(h: Harness, code = 1001, head = 0): Promise<void> {
  const before = h.fake.sockets.length;
  h.fake.latest.serverClose(code);
  await vi.advanceTimersByTimeAsync(1_000);
  if (h.fake.sockets.length !== before + 1) throw new Error("the client did not reconnect within its backoff");
  h.fake.latest.open({ head });
}

/** A stored event frame. */
export function stored(room: string, seq: number, event = "content-updated"): EventFrame {
  return { type: "event", room, event, seq, at: "2026-01-01T00:00:00Z", data: { id: seq } };
}
