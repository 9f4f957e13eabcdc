/**
 * Tokens against the real relay: a fresher token sent as `auth` keeps the
 * connection past the first token's `exp`; an expired token (HTTP 401 at
 * the upgrade) and a 4001 at `exp` both get a new token and reconnect.
 */

import { afterAll, beforeAll, expect, it } from "vitest";

import { createClient, tokenExpiry, type TokenReason } from "../../src/index.js";
import { observedWebSocket } from "./observed.js";
import { mintToken, Relay, TestDatabase, waitFor } from "./relay.js";

let db: TestDatabase;
let relay: Relay;

beforeAll(async () => ({ db, relay } = await Relay.onSeededDatabase()));

afterAll(() => Relay.tearDown(relay, db));

const reconnect = { minDelayMs: 50, maxDelayMs: 500 };

it("keeps one connection past the first token's exp by sending fresher tokens as auth", async () => {
  const observed = observedWebSocket();
  const client = createClient({
    url: relay.wsUrl,
    token: () => mintToken("2", 3),
    WebSocket: observed.WebSocket,
    reconnect,
    tokenRefreshLeadMs: 1_000,
  });
  await waitFor("the welcome", () => observed.connections[0]?.welcomed);
  const firstExp = tokenExpiry(new URL(observed.latest.url).searchParams.get("token")!)!;
  const acceptedAuths = () => {
    const socket = observed.latest;
    const refs = new Set(socket.sent.filter((frame) => frame.type === "auth").map((frame) => frame.ref));
    return socket.seen.filter((frame) => frame.type === "reply" && frame.ok && refs.has(frame.ref)).length;
  };
  await waitFor("an accepted auth after the first token expired", () => acceptedAuths() >= 1 && Date.now() / 1000 > firstExp + 1, 15_000);

  expect(observed.connections).toHaveLength(1);
  expect(observed.latest.closeCode).toBeUndefined();
  expect(client.status).toBe("open");
  client.close();
});

it("gets a new token after an HTTP 401 at the upgrade", async () => {
  const observed = observedWebSocket();
  const reasons: TokenReason[] = [];
  const client = createClient({
    url: relay.wsUrl,
    token: ({ reason }) => {
      reasons.push(reason);
      return mintToken("2", reasons.length === 1 ? -60 : 3_600);
    },
    WebSocket: observed.WebSocket,
    reconnect,
  });
  await waitFor("the client to open", () => client.status === "open");
  expect(reasons).toEqual(["connect", "refused"]);
  expect(observed.connections.map((socket) => socket.welcomed)).toEqual([false, true]);
  client.close();
});

it("gets a new token after the relay closes with 4001 at exp", async () => {
  const observed = observedWebSocket();
  const reasons: TokenReason[] = [];
  const shortLived = mintToken("2", 2);
  const client = createClient({
    url: relay.wsUrl,
    // Nothing fresher on refresh: the relay must close at exp.
    token: ({ reason }) => {
      reasons.push(reason);
      return reason === "refused" ? mintToken("2", 3_600) : shortLived;
    },
    WebSocket: observed.WebSocket,
    reconnect,
  });
  await waitFor("the 4001 close", () => observed.connections[0]?.closeCode === 4001, 10_000);
  await waitFor("the client to open again", () => observed.connections.length === 2 && client.status === "open");
  expect(reasons[0]).toBe("connect");
  expect(reasons[reasons.length - 1]).toBe("refused");
  expect(observed.connections[0]!.sent.filter((frame) => frame.type === "auth")).toHaveLength(0);
  client.close();
});
