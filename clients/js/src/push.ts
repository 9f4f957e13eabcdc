/**
 * `@rowcast/client/push`: registering this browser's push subscription
 * with the relay, which then sends the user's events to the service worker
 * while no page is open. It is its own entry point, not a part of the
 * client: it takes the same `url` and `token` as `createClient`, speaks
 * HTTP to the relay (`/v1/push/...`) rather than the WebSocket, and a page
 * that never uses it does not carry it.
 */

import { RowcastError, type ErrorCode } from "./protocol.js";
import type { TokenReason, TokenSource } from "./token.js";

const VAPID_PATH = "/v1/push/vapid";
const SUBSCRIPTIONS_PATH = "/v1/push/subscriptions";

/** The part of `fetch` the helper uses; the global one by default. */
export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export interface PushOptions {
  /**
   * The relay: the client's WebSocket endpoint (`ws://host:3001/v1/ws`) or a
   * base URL (`ws://host:3001`, `https://relay.example.com`). HTTP calls go
   * to the same origin, `ws` becoming `http` and `wss` `https`, under the
   * path before `/v1/ws`.
   */
  url: string;
  /**
   * The user's JWT, or the client's token function: asked once per
   * registration or removal (`reason: "connect"`), and once more with
   * `reason: "refused"` when the relay answers 401.
   */
  token: TokenSource;
  /** A fetch where there is no global one. */
  fetch?: FetchLike;
}

/** What `subscribe` and `unsubscribe` use of a `PushSubscription`. */
export interface PushSubscriptionLike {
  readonly endpoint: string;
  readonly options?: { readonly applicationServerKey: ArrayBuffer | null };
  toJSON(): PushSubscriptionJSON;
  unsubscribe(): Promise<boolean>;
}

/** What the helper uses of a `PushManager`. */
export interface PushManagerLike<Subscription extends PushSubscriptionLike = PushSubscriptionLike> {
  getSubscription(): Promise<Subscription | null>;
  subscribe(options: { userVisibleOnly: boolean; applicationServerKey: Uint8Array<ArrayBuffer> }): Promise<Subscription>;
  permissionState?(options: { userVisibleOnly: boolean; applicationServerKey?: Uint8Array<ArrayBuffer> }): Promise<PermissionState>;
}

/** A `ServiceWorkerRegistration`, or anything with its `pushManager`. */
export interface PushRegistrationLike<Subscription extends PushSubscriptionLike = PushSubscriptionLike> {
  readonly pushManager?: PushManagerLike<Subscription> | undefined;
}

/** The Web Push helper of one relay and one user. */
export interface RowcastPush {
  /** The relay's VAPID public key, decoded; rejects with `not_found` when the relay has none. */
  vapidKey(): Promise<Uint8Array<ArrayBuffer>>;
  /**
   * Subscribes this browser (or reuses its subscription when it is for the
   * relay's current key) and registers it with the relay for the token's
   * user; resolves with the subscription.
   */
  subscribe<Subscription extends PushSubscriptionLike>(registration: PushRegistrationLike<Subscription>): Promise<Subscription>;
  /**
   * Removes the browser's subscription from the relay, then unsubscribes it;
   * resolves `false` when there was none.
   */
  unsubscribe(registration: PushRegistrationLike): Promise<boolean>;
}

/**
 * The Web Push helper for a relay, given the `url` and `token` the app
 * gives `createClient` (the same options object fits).
 *
 * Guarantees:
 * - Every failure rejects with a `RowcastError` and one of its codes: the
 *   relay's for an HTTP error (`bad_request` for a refused subscription,
 *   `unauthorized`, `rate_limited`, ...); `not_found` when Web Push is not
 *   available (the relay has no VAPID key, or the browser no
 *   `PushManager`); `forbidden` when the user did not allow notifications;
 *   `offline` when the relay was not reached; `internal` when the browser's
 *   push service failed. The message says which, and `cause` holds the
 *   browser's own error.
 * - The token source is asked once per `subscribe` or `unsubscribe`, never
 *   cached here; after a 401 it is asked again with `refused` and the
 *   request is sent once more, no further.
 * - An existing subscription is kept only when it was made with the relay's
 *   current key; otherwise it is unsubscribed and replaced. Registering it
 *   again is harmless (the relay answers 201 and changes nothing).
 * - `unsubscribe` unsubscribes the browser even when the relay could not be
 *   told (the relay forgets an endpoint the push service reports gone); the
 *   relay's error is still the rejection.
 */
export function createPush(options: PushOptions): RowcastPush {
  const base = httpBase(options.url);
  const { token } = options;

  /** One request; any HTTP status resolves, only an unreachable relay (or a failed token source) rejects. */
  const request = async (method: string, path: string, body?: unknown, reason?: TokenReason): Promise<Response> => {
    const headers: Record<string, string> = {};
    if (reason !== undefined) headers.Authorization = `Bearer ${await ask(token, reason)}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const init: RequestInit = { method, headers };
    if (body !== undefined) init.body = JSON.stringify(body);
    const doFetch = options.fetch ?? (globalThis as { fetch?: FetchLike }).fetch;
    if (!doFetch) throw new RowcastError("not_found", "rowcast push: no global fetch here; pass the `fetch` option");
    try {
      return await doFetch(`${base}${path}`, init);
    } catch (error) {
      throw withCause(new RowcastError("offline", `rowcast push: ${method} ${path} did not reach the relay`), error);
    }
  };

  const succeeded = async (response: Response, method: string, path: string): Promise<Response> => {
    if (response.ok) return response;
    throw await httpError(response, method, path);
  };

  /** An authorized request, sent once more with a new token after a 401. */
  const authorized = async (method: string, path: string, body: unknown): Promise<Response> => {
    let response = await request(method, path, body, "connect");
    if (response.status === 401 && typeof token !== "string") response = await request(method, path, body, "refused");
    return succeeded(response, method, path);
  };

  const vapidKey = async (): Promise<Uint8Array<ArrayBuffer>> => {
    const response = await request("GET", VAPID_PATH);
    if (response.status === 404) {
      throw new RowcastError("not_found", "rowcast push: the relay has no VAPID key configured, so Web Push is off");
    }
    await succeeded(response, "GET", VAPID_PATH);
    let body: unknown;
    try {
      body = await response.json();
    } catch (error) {
      throw withCause(new RowcastError("internal", "rowcast push: the VAPID reply is not JSON"), error);
    }
    const publicKey = (body as { publicKey?: unknown } | null)?.publicKey;
    const key = typeof publicKey === "string" ? base64UrlDecode(publicKey) : undefined;
    if (!key || key.length !== 65 || key[0] !== 4) {
      throw new RowcastError("internal", "rowcast push: the relay's VAPID key is not a base64url uncompressed P-256 point");
    }
    return key;
  };

  return {
    vapidKey,

    async subscribe<Subscription extends PushSubscriptionLike>(registration: PushRegistrationLike<Subscription>): Promise<Subscription> {
      const manager = pushManagerOf(registration);
      const applicationServerKey = await vapidKey();
      const pushOptions = { userVisibleOnly: true, applicationServerKey };
      const state = await manager.permissionState?.(pushOptions).catch(() => undefined);
      if (state === "denied") throw denied();
      let subscription = await browserCall(() => manager.getSubscription());
      if (subscription && !sameKey(subscription.options?.applicationServerKey, applicationServerKey)) {
        // Made for another key (the relay's key changed): the push service would refuse the relay's pushes.
        await browserCall(() => subscription!.unsubscribe());
        subscription = null;
      }
      subscription ??= await browserCall(() => manager.subscribe(pushOptions));
      await authorized("POST", SUBSCRIPTIONS_PATH, subscription.toJSON());
      return subscription;
    },

    async unsubscribe(registration: PushRegistrationLike): Promise<boolean> {
      const manager = pushManagerOf(registration);
      const subscription = await browserCall(() => manager.getSubscription());
      if (!subscription) return false;
      const relay = await authorized("DELETE", SUBSCRIPTIONS_PATH, { endpoint: subscription.endpoint }).then(
        () => undefined,
        (error: unknown) => error,
      );
      // Unsubscribed even when the relay was not told: the user asked for no more notifications.
      const browser = await browserCall(() => subscription.unsubscribe()).then(
        () => undefined,
        (error: unknown) => error,
      );
      if (relay !== undefined || browser !== undefined) throw relay ?? browser;
      return true;
    },
  };
}

/**
 * The relay's HTTP base for the client's URL: `ws://host:3001/v1/ws` →
 * `http://host:3001`, `wss://host/rowcast/v1/ws` → `https://host/rowcast`;
 * a base URL keeps its path. Query and fragment are dropped.
 */
export function httpBase(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError("rowcast push: `url` is not a URL");
  }
  if (parsed.protocol === "ws:") parsed.protocol = "http:";
  else if (parsed.protocol === "wss:") parsed.protocol = "https:";
  else if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new TypeError(`rowcast push: the URL must start with ws://, wss://, http:// or https://, got ${parsed.protocol}//`);
  }
  const path = parsed.pathname.replace(/\/+$/, "").replace(/\/v1\/ws$/, "");
  return `${parsed.origin}${path}`;
}

/** The bytes of a base64url string (padding optional); `undefined` when it is not base64url. */
export function base64UrlDecode(text: string): Uint8Array<ArrayBuffer> | undefined {
  if (!/^[A-Za-z0-9_-]*={0,2}$/.test(text) || text.replace(/=+$/, "").length % 4 === 1) return undefined;
  const binary = atob(text.replace(/=+$/, "").replace(/-/g, "+").replace(/_/g, "/"));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

async function ask(source: TokenSource, reason: TokenReason): Promise<string> {
  let token: unknown;
  try {
    token = typeof source === "string" ? source : await source({ reason });
  } catch (error) {
    throw withCause(new RowcastError("unauthorized", "rowcast push: the token source failed"), error);
  }
  if (typeof token !== "string" || token === "") throw new RowcastError("unauthorized", "rowcast push: the token source gave no token");
  return token;
}

function pushManagerOf<Subscription extends PushSubscriptionLike>(
  registration: PushRegistrationLike<Subscription> | null | undefined,
): PushManagerLike<Subscription> {
  const manager = registration?.pushManager;
  if (!manager) {
    throw new RowcastError("not_found", "rowcast push: this browser has no PushManager (Web Push needs a service worker registration, over HTTPS or on localhost)");
  }
  return manager;
}

function denied(cause?: unknown): RowcastError {
  const hint = cause === undefined ? "" : " (or permission was not asked on a user gesture first: Notification.requestPermission())";
  return withCause(new RowcastError("forbidden", `rowcast push: the user did not allow notifications${hint}`), cause);
}

/** Runs a `PushManager` or `PushSubscription` call, turning its DOMException into a `RowcastError`. */
async function browserCall<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    const name = (error as { name?: unknown } | null)?.name;
    if (name === "NotAllowedError") throw denied(error);
    const detail = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    throw withCause(new RowcastError("internal", `rowcast push: the browser's push service failed (${detail})`), error);
  }
}

function sameKey(existing: ArrayBuffer | null | undefined, key: Uint8Array): boolean {
  if (!existing || existing.byteLength !== key.length) return false;
  const bytes = new Uint8Array(existing);
  return bytes.every((byte, i) => byte === key[i]);
}

/** The codes an HTTP error body may carry, and the one each status means without a body. */
const HTTP_CODES = new Set<ErrorCode>(["bad_request", "unauthorized", "forbidden", "not_found", "rate_limited", "too_large", "internal"]);
const STATUS_CODES: Record<number, ErrorCode> = {
  400: "bad_request",
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  413: "too_large",
  429: "rate_limited",
};

/** The error of a refused request: the code and message of the relay's error body, or its status alone. */
async function httpError(response: Response, method: string, path: string): Promise<RowcastError> {
  let error: { code?: unknown; message?: unknown } | undefined;
  try {
    error = ((await response.json()) as { error?: typeof error } | null)?.error;
  } catch {
    error = undefined;
  }
  const code = typeof error?.code === "string" && HTTP_CODES.has(error.code as ErrorCode) ? (error.code as ErrorCode) : undefined;
  const said = typeof error?.message === "string" ? `: ${error.message}` : "";
  return new RowcastError(
    code ?? STATUS_CODES[response.status] ?? "internal",
    `rowcast push: ${method} ${path} failed with HTTP ${response.status}${said}`,
  );
}

function withCause(error: RowcastError, cause: unknown): RowcastError {
  if (cause !== undefined) Object.defineProperty(error, "cause", { value: cause, configurable: true, writable: true });
  return error;
}
