import { describe, expect, it } from "vitest";

import { RowcastError } from "../../src/protocol.js";
import { base64UrlDecode, createPush, httpBase, type PushOptions } from "../../src/push.js";
import type { TokenReason } from "../../src/token.js";
import { base64url, FakePushManager, fakeRelayFetch, p256Point, relayError } from "./fake-push.js";

const KEY = p256Point(1);
const NEW_KEY = p256Point(2);

/** A helper for `ws://relay.test/v1/ws` over the fake relay, a token function counting its calls, and a registration. */
function setup(options: Partial<PushOptions> = {}, key = KEY) {
  const relay = fakeRelayFetch(base64url(key));
  const reasons: TokenReason[] = [];
  const push = createPush({
    url: "ws://relay.test/v1/ws",
    token: ({ reason }) => {
      reasons.push(reason);
      return `token-${reasons.length}`;
    },
    fetch: relay.fetch,
    ...options,
  });
  const manager = new FakePushManager();
  return { push, relay, reasons, manager, registration: { pushManager: manager } };
}

/** The error a promise rejects with (it must reject). */
async function rejection(promise: Promise<unknown>): Promise<RowcastError> {
  const error = await promise.then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(error).toBeInstanceOf(RowcastError);
  return error as RowcastError;
}

describe("base64UrlDecode", () => {
  it("gives the bytes Node's base64url decoder gives, padded or not, for every length", () => {
    for (let length = 0; length <= 70; length++) {
      const bytes = Uint8Array.from({ length }, (_, i) => (i * 73 + length * 11) & 0xff);
      const text = base64url(bytes);
      expect(base64UrlDecode(text)).toEqual(bytes);
      expect(base64UrlDecode(text + "=".repeat((4 - (text.length % 4)) % 4))).toEqual(bytes);
    }
    expect(base64url(KEY)).toMatch(/^BPvvvv___/); // `-`/`_` where base64 has `+`/`/`
    expect(base64UrlDecode(base64url(KEY))).toEqual(KEY);
  });

  it("refuses what is not base64url", () => {
    expect(base64UrlDecode("ab+/")).toBeUndefined(); // plain base64
    expect(base64UrlDecode("abcde")).toBeUndefined(); // a length no encoding has
    expect(base64UrlDecode("ab cd")).toBeUndefined();
    expect(base64UrlDecode("a=bc")).toBeUndefined();
  });
});

describe("httpBase", () => {
  it("is the WebSocket URL's origin over HTTP, with the path before /v1/ws", () => {
    expect(httpBase("ws://relay.test:3001/v1/ws")).toBe("http://relay.test:3001");
    expect(httpBase("wss://relay.test/v1/ws?x=1#y")).toBe("https://relay.test");
    expect(httpBase("wss://example.com/rowcast/v1/ws/")).toBe("https://example.com/rowcast");
    expect(httpBase("ws://relay.test:3001")).toBe("http://relay.test:3001");
    expect(httpBase("https://example.com/rowcast/")).toBe("https://example.com/rowcast");
    expect(() => httpBase("ftp://relay.test")).toThrow(/ws:\/\//);
    expect(() => httpBase("relay.test")).toThrow(/not a URL/);
  });
});

describe("push.subscribe", () => {
  it("fetches the VAPID key, subscribes with its bytes, registers the subscription's JSON with a Bearer token", async () => {
    const { push, relay, manager, registration } = setup();
    const subscription = await push.subscribe(registration);

    expect(subscription).toBe(manager.current);
    expect(manager.log).toEqual(["getSubscription", "subscribe userVisibleOnly=true"]);
    expect(manager.keys).toEqual([KEY]);
    expect(relay.requests.map((r) => `${r.method} ${r.url}`)).toEqual([
      "GET http://relay.test/v1/push/vapid",
      "POST http://relay.test/v1/push/subscriptions",
    ]);
    const [vapid, post] = relay.requests;
    expect(vapid!.headers.Authorization).toBeUndefined();
    expect(post!.headers).toEqual({ Authorization: "Bearer token-1", "Content-Type": "application/json" });
    expect(post!.body).toEqual({
      endpoint: "https://push.example.net/send/1",
      expirationTime: null,
      keys: { p256dh: "BPublicKeyOfTheBrowser", auth: "authSecret" },
    });
    expect(post!.body).toEqual(subscription.toJSON());
  });

  it("reuses a subscription made for the relay's key, and registers it again", async () => {
    const { push, relay, manager, registration } = setup();
    const existing = manager.existing(KEY);
    expect(await push.subscribe(registration)).toBe(existing);
    expect(manager.log).toEqual(["getSubscription"]);
    expect(relay.requests[1]!.body).toEqual(existing.toJSON());
  });

  it("replaces a subscription made for another key (or none): unsubscribe, then subscribe with the new key", async () => {
    for (const oldKey of [NEW_KEY, null]) {
      const { push, relay, manager, registration } = setup();
      const existing = manager.existing(oldKey);
      const subscription = await push.subscribe(registration);
      expect(subscription).not.toBe(existing);
      expect(existing.unsubscribed).toBe(true);
      expect(manager.log).toEqual(["getSubscription", "unsubscribe https://push.example.net/send/old", "subscribe userVisibleOnly=true"]);
      expect(manager.keys).toEqual([KEY]);
      expect((relay.requests[1]!.body as { endpoint: string }).endpoint).toBe("https://push.example.net/send/1");
    }
  });

  it("follows the relay's key when it changes between calls", async () => {
    const first = setup({}, KEY);
    await first.push.subscribe(first.registration);
    const rotated = setup({}, NEW_KEY);
    const again = await rotated.push.subscribe(first.registration);
    expect(first.manager.keys).toEqual([KEY, NEW_KEY]);
    expect(again.endpoint).toBe("https://push.example.net/send/2");
  });

  it("asks the token function once per call, never caching its answer", async () => {
    const { push, relay, reasons, manager, registration } = setup();
    await push.subscribe(registration);
    await push.subscribe(registration);
    await push.unsubscribe(registration);
    expect(reasons).toEqual(["connect", "connect", "connect"]);
    expect(relay.requests.filter((r) => r.method !== "GET").map((r) => r.headers.Authorization)).toEqual([
      "Bearer token-1",
      "Bearer token-2",
      "Bearer token-3",
    ]);
    expect(manager.keys).toHaveLength(1); // the second call reused the subscription
  });

  it("takes a fixed token, and awaits an async token function", async () => {
    const fixed = setup({ token: "fixed" });
    await fixed.push.subscribe(fixed.registration);
    expect(fixed.relay.requests[1]!.headers.Authorization).toBe("Bearer fixed");

    const later = setup({ token: () => new Promise((resolve) => setTimeout(() => resolve("later"), 5)) });
    await later.push.subscribe(later.registration);
    expect(later.relay.requests[1]!.headers.Authorization).toBe("Bearer later");
  });

  it("after a 401 asks for a new token (refused) and sends once more, no further", async () => {
    const { push, relay, reasons, registration } = setup();
    relay.answer("POST /v1/push/subscriptions", relayError(401, "unauthorized", "token expired"));
    await push.subscribe(registration);
    expect(reasons).toEqual(["connect", "refused"]);
    expect(relay.requests.filter((r) => r.method === "POST").map((r) => r.headers.Authorization)).toEqual([
      "Bearer token-1",
      "Bearer token-2",
    ]);

    const refused = relayError(401, "unauthorized", "bad signature");
    relay.answer("POST /v1/push/subscriptions", refused, refused, refused);
    const error = await rejection(push.subscribe(registration));
    expect(error.code).toBe("unauthorized");
    expect(reasons).toEqual(["connect", "refused", "connect", "refused"]);
  });

  it("rejects with unauthorized, sending nothing, when the token source fails; that is not a refusal to retry", async () => {
    let calls = 0;
    const { push, relay, manager, registration } = setup({
      token: () => {
        calls += 1;
        throw new Error("auth server down");
      },
    });
    const error = await rejection(push.subscribe(registration));
    expect(error.code).toBe("unauthorized");
    expect((error as Error & { cause?: unknown }).cause).toEqual(new Error("auth server down"));
    expect(calls).toBe(1);
    expect(relay.requests.map((r) => r.method)).toEqual(["GET"]);
    expect(manager.current).not.toBeNull(); // subscribed in the browser; the next call registers it
  });

  it("rejects with the relay's code and reason on 400 and 429, keeping the browser's subscription", async () => {
    const { push, relay, manager, registration } = setup();
    relay.answer("POST /v1/push/subscriptions", relayError(400, "bad_request", "endpoint origin not allowed"));
    const error = await rejection(push.subscribe(registration));
    expect(error.code).toBe("bad_request");
    expect(error.message).toMatch(/HTTP 400: endpoint origin not allowed/);
    expect(manager.current?.unsubscribed).toBe(false);

    relay.answer("POST /v1/push/subscriptions", relayError(429, "rate_limited", "too many subscriptions"));
    expect((await rejection(push.subscribe(registration))).code).toBe("rate_limited");
    expect(manager.keys).toHaveLength(1); // each retry reused the one subscription
  });

  it("rejects with not_found when the relay has no VAPID key, before touching the browser", async () => {
    const { push, relay, reasons, manager, registration } = setup();
    relay.answer("GET /v1/push/vapid", relayError(404, "not_found", "no VAPID key configured"));
    const error = await rejection(push.subscribe(registration));
    expect(error.code).toBe("not_found");
    expect(error.message).toMatch(/no VAPID key/);
    expect(manager.log).toEqual([]);
    expect(reasons).toEqual([]);
    expect(relay.requests).toHaveLength(1);
  });

  it("refuses a VAPID key that is not an uncompressed P-256 point", async () => {
    for (const body of [{ publicKey: base64url(KEY.subarray(1)) }, { publicKey: "not base64url!" }, { publicKey: 42 }, "not json"]) {
      const { push, relay, manager, registration } = setup();
      relay.answer("GET /v1/push/vapid", { status: 200, body });
      expect((await rejection(push.subscribe(registration))).code).toBe("internal");
      expect(manager.log).toEqual([]);
    }
  });

  it("maps an error without the relay's body by its status, and an unreachable relay to offline", async () => {
    const { push, relay, registration } = setup();
    relay.answer("POST /v1/push/subscriptions", { status: 502, body: "<html>Bad Gateway</html>" });
    const error = await rejection(push.subscribe(registration));
    expect(error.code).toBe("internal");
    expect(error.message).toMatch(/HTTP 502/);

    relay.answer("GET /v1/push/vapid", "network-error");
    const offline = await rejection(push.subscribe(registration));
    expect(offline.code).toBe("offline");
    expect((offline as Error & { cause?: unknown }).cause).toBeInstanceOf(TypeError);
  });

  it("says not_found where there is no PushManager, without calling the relay", async () => {
    const { push, relay } = setup();
    for (const registration of [{}, { pushManager: undefined }]) {
      const error = await rejection(push.subscribe(registration));
      expect(error.code).toBe("not_found");
      expect(error.message).toMatch(/no PushManager/);
    }
    expect((await rejection(push.unsubscribe({}))).code).toBe("not_found");
    expect(relay.requests).toEqual([]);
  });

  it("says forbidden when notifications are blocked, or the browser refuses the subscription", async () => {
    const blocked = setup();
    blocked.manager.permission = "denied";
    const denied = await rejection(blocked.push.subscribe(blocked.registration));
    expect(denied.code).toBe("forbidden");
    expect(denied.message).toMatch(/did not allow notifications/);
    expect(blocked.manager.log).toEqual([]);

    const refused = setup();
    refused.manager.permission = "prompt";
    refused.manager.failSubscribe = new DOMException("Registration failed - permission denied", "NotAllowedError");
    const error = await rejection(refused.push.subscribe(refused.registration));
    expect(error.code).toBe("forbidden");
    expect((error as Error & { cause?: unknown }).cause).toBe(refused.manager.failSubscribe);
    expect(refused.relay.requests.map((r) => r.method)).toEqual(["GET"]);

    const failed = setup();
    failed.manager.failSubscribe = new DOMException("push service not available", "AbortError");
    const abort = await rejection(failed.push.subscribe(failed.registration));
    expect(abort.code).toBe("internal");
    expect(abort.message).toMatch(/AbortError: push service not available/);
  });
});

describe("push.unsubscribe", () => {
  it("deletes the endpoint on the relay, then unsubscribes the browser", async () => {
    const { push, relay, manager, registration } = setup();
    const subscription = await push.subscribe(registration);
    manager.log.length = 0;
    expect(await push.unsubscribe(registration)).toBe(true);

    const del = relay.requests.at(-1)!;
    expect(`${del.method} ${del.url}`).toBe("DELETE http://relay.test/v1/push/subscriptions");
    expect(del.headers).toEqual({ Authorization: "Bearer token-2", "Content-Type": "application/json" });
    expect(del.body).toEqual({ endpoint: subscription.endpoint });
    expect(manager.log).toEqual(["getSubscription", `unsubscribe ${subscription.endpoint}`]);
    expect(subscription.unsubscribed).toBe(true);
  });

  it("resolves false without calling the relay when there is no subscription", async () => {
    const { push, relay, reasons, registration } = setup();
    expect(await push.unsubscribe(registration)).toBe(false);
    expect(relay.requests).toEqual([]);
    expect(reasons).toEqual([]);
  });

  it("still unsubscribes the browser when the relay refuses, and rejects with the relay's error", async () => {
    const { push, relay, manager, registration } = setup();
    const existing = manager.existing(KEY);
    relay.answer("DELETE /v1/push/subscriptions", relayError(429, "rate_limited", "slow down"));
    const error = await rejection(push.unsubscribe(registration));
    expect(error.code).toBe("rate_limited");
    expect(existing.unsubscribed).toBe(true);
    expect(relay.requests.map((r) => r.method)).toEqual(["DELETE"]);
  });
});
