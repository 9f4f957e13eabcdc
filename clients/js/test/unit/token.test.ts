import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { tokenExpiry } from "../../src/token.js";
import { settle } from "./fake-socket.js";
import { harness, jwt, openHarness, reconnect } from "./harness.js";

beforeEach(() => void vi.useFakeTimers({ now: new Date("2026-06-01T00:00:00Z") }));
afterEach(() => {
  vi.restoreAllMocks();
  vi.useRealTimers();
});

const nowSeconds = () => Math.floor(Date.now() / 1000);

describe("tokenExpiry", () => {
  it("reads exp from the payload without verifying, and nothing from junk", () => {
    expect(tokenExpiry(jwt(1_900_000_000))).toBe(1_900_000_000);
    expect(tokenExpiry("not-a-jwt")).toBeUndefined();
    expect(tokenExpiry("a.!!!.c")).toBeUndefined();
    expect(tokenExpiry(`x.${Buffer.from('{"sub":"1"}').toString("base64url")}.y`)).toBeUndefined();
  });
});

describe("a token for every connection", () => {
  it("calls the token function on every connect and puts its answer in the URL", async () => {
    const h = await openHarness();
    await reconnect(h, 1001);
    await reconnect(h, 4008);
    expect(h.reasons).toEqual(["connect", "connect", "connect"]);
    expect(h.fake.sockets.map((socket) => socket.token)).toEqual(["token-1", "token-2", "token-3"]);
  });

  it("asks for a new token after 4001, and still waits its backoff", async () => {
    const h = await openHarness();
    h.fake.latest.serverClose(4001);
    await vi.advanceTimersByTimeAsync(99);
    expect(h.fake.sockets).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(h.fake.sockets).toHaveLength(2);
    expect(h.reasons).toEqual(["connect", "refused"]);
  });

  it("treats an HTTP 401 at the upgrade, and an unexplained close before open (how browsers show it), as refused; not a 503 or a network error", async () => {
    const h = harness();
    await settle();
    h.fake.latest.refuseUpgrade(401);
    await vi.advanceTimersByTimeAsync(1_000);
    h.fake.latest.refuseUpgrade(401, false);
    await vi.advanceTimersByTimeAsync(1_000);
    h.fake.latest.refuseUpgrade(503);
    await vi.advanceTimersByTimeAsync(1_000);
    h.fake.latest.failNetwork();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(h.reasons).toEqual(["connect", "refused", "refused", "connect", "connect"]);
    expect(h.statuses).toEqual([]); // still connecting: never opened
  });

  it("never retries in a tight loop while every upgrade is refused", async () => {
    const h = harness();
    await settle();
    for (let i = 0; i < 40; i++) {
      h.fake.latest.refuseUpgrade(401);
      await vi.advanceTimersByTimeAsync(250);
    }
    const gaps = h.fake.sockets.slice(1).map((socket, i) => socket.createdAt - h.fake.sockets[i]!.createdAt);
    expect(gaps.every((gap) => gap >= 100)).toBe(true);
    expect(h.fake.sockets.length).toBeLessThanOrEqual(40 * 250 / 100 + 1);
  });

  it("retries when the token function fails", async () => {
    let calls = 0;
    const h = harness({
      token: () => {
        calls += 1;
        if (calls === 1) throw new Error("auth server down");
        return "good";
      },
    });
    await settle();
    expect(h.fake.sockets).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(h.fake.sockets.map((socket) => socket.token)).toEqual(["good"]);
  });
});

describe("backoff over a connection's life", () => {
  it("grows while connections fail, resets after a stable connection, not after a short one", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0.999_999);
    const h = harness();
    await settle();
    const waitForNext = async () => {
      const before = h.fake.sockets.length;
      const start = Date.now();
      while (h.fake.sockets.length === before) await vi.advanceTimersByTimeAsync(10);
      return Math.round((h.fake.latest.createdAt - start) / 100) * 100;
    };
    h.fake.latest.refuseUpgrade(503);
    expect(await waitForNext()).toBe(200);
    h.fake.latest.refuseUpgrade(503);
    expect(await waitForNext()).toBe(400);
    h.fake.latest.open();
    await vi.advanceTimersByTimeAsync(1_000); // open 1 s: not stable
    h.fake.latest.serverClose(1006);
    expect(await waitForNext()).toBe(800);
    h.fake.latest.open();
    await vi.advanceTimersByTimeAsync(6_000); // open 6 s: stable
    h.fake.latest.serverClose(1001);
    expect(await waitForNext()).toBe(200);
    h.fake.latest.open();
    h.fake.latest.serverClose(4029); // the relay says back off: widest window
    expect(await waitForNext()).toBe(1_000);
  });
});

describe("refresh before exp", () => {
  it("sends auth with a fresher token before exp and keeps the connection", async () => {
    const h = await openHarness({ token: () => jwt(nowSeconds() + 60), tokenRefreshLeadMs: 30_000 });
    const socket = h.fake.latest;
    const firstExp = tokenExpiry(socket.token!)!;
    await vi.advanceTimersByTimeAsync(29_000);
    expect(socket.sentOf("auth")).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(2_000);
    const auth = socket.last("auth");
    expect(tokenExpiry(auth.token as string)).toBeGreaterThan(firstExp);
    expect(Date.now() / 1000).toBeLessThan(firstExp);
    socket.reply("auth", { exp: tokenExpiry(auth.token as string) });
    await vi.advanceTimersByTimeAsync(31_000);
    expect(socket.sentOf("auth")).toHaveLength(2); // the refreshed token is refreshed in turn
    expect(h.fake.sockets).toHaveLength(1);
  });

  it("refreshes a short-lived token half-way", async () => {
    const h = await openHarness({ token: () => jwt(nowSeconds() + 10), tokenRefreshLeadMs: 30_000 });
    await vi.advanceTimersByTimeAsync(4_900);
    expect(h.fake.latest.sentOf("auth")).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(200);
    expect(h.fake.latest.sentOf("auth")).toHaveLength(1);
  });

  it("sends no auth when the function has nothing fresher, and reconnects as refused on the 4001 at exp", async () => {
    const token = jwt(nowSeconds() + 60);
    const reasons: string[] = [];
    const h = await openHarness({
      token: ({ reason }) => {
        reasons.push(reason);
        return reason === "refused" ? jwt(nowSeconds() + 3_600) : token;
      },
    });
    await vi.advanceTimersByTimeAsync(59_000);
    expect(h.fake.latest.sentOf("auth")).toHaveLength(0);
    expect(reasons.filter((reason) => reason === "refresh").length).toBeGreaterThanOrEqual(2);
    h.fake.latest.serverClose(4001);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(reasons[reasons.length - 1]).toBe("refused");
    expect(tokenExpiry(h.fake.latest.token!)).toBeGreaterThan(nowSeconds() + 3_000);
  });

  it("keeps the connection when the relay refuses the new token", async () => {
    const h = await openHarness({ token: () => jwt(nowSeconds() + 60) });
    await vi.advanceTimersByTimeAsync(31_000);
    h.fake.latest.refuse("auth", "unauthorized");
    await vi.advanceTimersByTimeAsync(10_000);
    expect(h.client.status).toBe("open");
    expect(h.fake.latest.sentOf("auth")).toHaveLength(1);
  });

  it("never refreshes a fixed string token", async () => {
    const h = await openHarness({ token: jwt(nowSeconds() + 60) });
    await vi.advanceTimersByTimeAsync(59_000);
    expect(h.fake.latest.sentOf("auth")).toHaveLength(0);
  });
});
