/**
 * Fakes for the Web Push helper: a `pushManager` whose subscriptions the
 * test sets up and whose calls it reads, and a `fetch` that plays the
 * relay's `/v1/push` API (the test changes its answers) and records every
 * request.
 */

import type { PushManagerLike, PushSubscriptionLike } from "../../src/push.js";

/** An uncompressed P-256 point: 0x04, then 64 bytes (here a pattern whose base64url has `-` and `_`). */
export function p256Point(seed = 0): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(65);
  bytes[0] = 4;
  bytes.set([0xfb, 0xef, 0xbe, 0xff, 0xff, 0xff], 1);
  for (let i = 7; i < 65; i++) bytes[i] = (i * 37 + seed * 101) & 0xff;
  return bytes;
}

export const base64url = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64url");

export class FakeSubscription implements PushSubscriptionLike {
  readonly options: { applicationServerKey: ArrayBuffer | null };
  unsubscribed = false;

  constructor(
    private readonly log: string[],
    readonly endpoint: string,
    key: Uint8Array | null,
  ) {
    this.options = { applicationServerKey: key ? new Uint8Array(key).buffer : null };
  }

  toJSON(): PushSubscriptionJSON {
    return { endpoint: this.endpoint, expirationTime: null, keys: { p256dh: "BPublicKeyOfTheBrowser", auth: "authSecret" } };
  }

  async unsubscribe(): Promise<boolean> {
    this.log.push(`unsubscribe ${this.endpoint}`);
    this.unsubscribed = true;
    return true;
  }
}

/** A `pushManager` holding at most one subscription, as a browser does per registration. */
export class FakePushManager implements PushManagerLike<FakeSubscription> {
  /** Every call, in order, shared with the subscriptions it made. */
  readonly log: string[] = [];
  current: FakeSubscription | null = null;
  /** The `applicationServerKey` of every `subscribe` call. */
  readonly keys: Uint8Array[] = [];
  permission: PermissionState = "granted";
  /** When set, `subscribe` rejects with it (a `DOMException`, as browsers do). */
  failSubscribe: unknown;
  private made = 0;

  /** Starts with a subscription made for `key`. */
  existing(key: Uint8Array | null): FakeSubscription {
    this.current = new FakeSubscription(this.log, "https://push.example.net/send/old", key);
    return this.current;
  }

  async getSubscription(): Promise<FakeSubscription | null> {
    this.log.push("getSubscription");
    return this.current?.unsubscribed ? null : this.current;
  }

  async subscribe(options: { userVisibleOnly: boolean; applicationServerKey: Uint8Array }): Promise<FakeSubscription> {
    this.log.push(`subscribe userVisibleOnly=${options.userVisibleOnly}`);
    if (this.failSubscribe !== undefined) throw this.failSubscribe;
    this.keys.push(options.applicationServerKey);
    this.current = new FakeSubscription(this.log, `https://push.example.net/send/${++this.made}`, options.applicationServerKey);
    return this.current;
  }

  async permissionState(): Promise<PermissionState> {
    return this.permission;
  }
}

export interface RecordedRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: unknown;
}

export type Answer = { status: number; body?: unknown } | "network-error";

/** A fetch answering like the relay; `answers` overrides a route (`"POST /v1/push/subscriptions"`), in order. */
export function fakeRelayFetch(vapidKey: string) {
  const requests: RecordedRequest[] = [];
  const answers = new Map<string, Answer[]>();
  const fetch = async (url: string, init: RequestInit = {}): Promise<Response> => {
    const method = init.method ?? "GET";
    const body = typeof init.body === "string" ? JSON.parse(init.body) : undefined;
    requests.push({ method, url, headers: { ...(init.headers as Record<string, string>) }, body });
    const route = `${method} ${new URL(url).pathname}`;
    const answer = answers.get(route)?.shift() ?? defaultAnswer(route, vapidKey, body);
    if (answer === "network-error") throw new TypeError("fetch failed");
    const text = answer.body === undefined ? null : typeof answer.body === "string" ? answer.body : JSON.stringify(answer.body);
    return new Response(text, { status: answer.status, headers: { "Content-Type": "application/json" } });
  };
  return {
    fetch,
    requests,
    /** Queues answers for one route, used before the default. */
    answer(route: string, ...queued: Answer[]) {
      answers.set(route, [...(answers.get(route) ?? []), ...queued]);
    },
  };
}

function defaultAnswer(route: string, vapidKey: string, body: unknown): Answer {
  switch (route) {
    case "GET /v1/push/vapid":
      return { status: 200, body: { publicKey: vapidKey } };
    case "POST /v1/push/subscriptions":
      return { status: 201, body: { endpoint: (body as { endpoint: string }).endpoint } };
    case "DELETE /v1/push/subscriptions":
      return { status: 204 };
    default:
      return { status: 404, body: { error: { code: "not_found", message: "no such route" } } };
  }
}

/** The relay's error body. */
export function relayError(status: number, code: string, message: string): Answer {
  return { status, body: { error: { code, message } } };
}
