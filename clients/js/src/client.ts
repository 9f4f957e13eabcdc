/**
 * The client: one connection to the relay at a time, replaced after every
 * drop, with the rooms, cursors and token carried from one to the next.
 * It is generic over the app's events map (`createClient<RowcastEvents>`),
 * which types the frames it hands out; it knows no event names itself.
 */

import { Backoff, reconnectOptions, type ReconnectOptions } from "./backoff.js";
import { EventHandlers } from "./handlers.js";
import { memoryCursors, type CursorStore } from "./cursors.js";
import type { EventMap, FrameOf, ListenedName, UntypedEvents } from "./events.js";
import { Listeners } from "./listeners.js";
import { CloseCode, RowcastError, type ClientFrame, type OkReply, type ServerFrame, type Welcome } from "./protocol.js";
import { Requests } from "./requests.js";
import { Rooms, type SubscribeOptions, type Subscription } from "./subscriptions.js";
import { Connection, type Ended, type WebSocketConstructor } from "./socket.js";
import { TokenKeeper, type TokenSource } from "./token.js";

/**
 * `connecting` until the first welcome, `open` while a connection is
 * usable, `reconnecting` between a drop and the next welcome, `closed`
 * after `close()`.
 */
export type Status = "connecting" | "open" | "reconnecting" | "closed";

export interface ClientOptions {
  /** The relay's WebSocket endpoint, for example `ws://localhost:3001/v1/ws`. */
  url: string;
  /** A JWT, or a function giving one, called for every connection and refresh. */
  token: TokenSource;
  /** A WebSocket implementation where there is no global one (Node 20: the `ws` package). */
  WebSocket?: WebSocketConstructor;
  /** Reconnect delays (defaults: 250 ms to 10 s, reset after 5 s open). */
  reconnect?: Partial<ReconnectOptions>;
  /** Where each room's last delivered seq is kept (default: memory). */
  cursors?: CursorStore;
  /** How long the last unsubscribe waits before leaving the room (default 0: the next task). */
  leaveDelayMs?: number;
  /** An upgrade plus welcome slower than this is abandoned and retried (default 10 s). */
  connectTimeoutMs?: number;
  /** How long before the token's `exp` a fresher one is asked for (default 30 s). */
  tokenRefreshLeadMs?: number;
}

/** The client's own notifications, `client.on("status")` and `client.on("event")`. */
export interface ClientEvents<Events extends EventMap<Events> = UntypedEvents> {
  status: Status;
  /** Every event frame delivered to a room's subscriptions, and those of rooms nobody subscribed (`broadcast`). */
  event: FrameOf<Events>;
}

/**
 * A client, typed by the app's events map when one is given
 * (`createClient<RowcastEvents>(...)`, the map `rowcast types` generates);
 * without one, event names are strings and `data` a record of unknown values.
 */
export function createClient<Events extends EventMap<Events> = UntypedEvents>(options: ClientOptions): RowcastClient<Events> {
  return new RowcastClient<Events>(options);
}

/**
 * A connection to rowcast that survives drops.
 *
 * Guarantees:
 * - After any disconnect (close 1001, 1011 or 4008, a network drop, a relay
 *   restart, a dead connection found by the heartbeat) it reconnects after
 *   a backoff delay with jitter and rejoins every subscribed room with
 *   `since` = the room's last delivered seq (see `Rooms` for exactly-once).
 * - The token source is called for every connection; after a 4001 close or
 *   a refused upgrade it is asked with reason `refused`, and the next try
 *   still waits its backoff delay, which only grows until a connection has
 *   stayed open `stableAfterMs`: never a tight loop.
 * - `emit` sends only on an open connection and rejects otherwise: ephemeral
 *   events are never queued (a stale typing indicator is worse than none).
 * - A listener of one event name (`on(name, listener)`) gets each stored
 *   event once, whichever of the joined rooms it came through.
 *
 * `Events` only types what the client hands out; frames are not checked
 * against it at run time.
 */
export class RowcastClient<Events extends EventMap<Events> = UntypedEvents> {
  private readonly url: string;
  private readonly WebSocket: WebSocketConstructor;
  private readonly reconnect: ReconnectOptions;
  private readonly connectTimeoutMs: number;
  private readonly backoff: Backoff;
  private readonly requests = new Requests();
  private readonly rooms: Rooms;
  private readonly tokens: TokenKeeper;
  private readonly listeners: { [K in keyof ClientEvents]: Listeners<ClientEvents[K]> } = {
    status: new Listeners(),
    event: new Listeners(),
  };
  /** Listeners by event name. */
  private readonly named = new EventHandlers();
  private connection: Connection | undefined;
  private currentStatus: Status = "connecting";
  private everOpened = false;
  private openedAt = 0;
  private closed = false;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** The newest seq seen: a live-only join starts here. */
  private head: number | undefined;

  constructor(options: ClientOptions) {
    this.url = checkedUrl(options.url);
    this.WebSocket = options.WebSocket ?? defaultWebSocket();
    this.reconnect = reconnectOptions(options.reconnect);
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.backoff = new Backoff(this.reconnect);
    this.rooms = new Rooms(
      options.cursors ?? memoryCursors(),
      {
        isOpen: () => this.connection?.isOpen ?? false,
        join: (room, since) => this.request(since === undefined ? { type: "join", room } : { type: "join", room, since }),
        leave: (room) => this.request({ type: "leave", room }),
        head: () => this.head,
      },
      options.leaveDelayMs ?? 0,
    );
    this.tokens = new TokenKeeper(options.token, options.tokenRefreshLeadMs ?? 30_000, (token) =>
      this.request({ type: "auth", token }),
    );
    void this.connect(false);
  }

  /** The connection's state now. */
  get status(): Status {
    return this.currentStatus;
  }

  /** Receives a room's events (see `SubscribeOptions`); rooms are joined once however many subscribe. */
  subscribe(room: string, options: SubscribeOptions<Events> = {}): Subscription {
    if (this.closed) throw new Error("rowcast client is closed");
    return this.rooms.subscribe(room, options as SubscribeOptions);
  }

  /** Sends an ephemeral event to a joined room; rejects (`offline`) when not connected. */
  emit(room: string, event: string, data: Record<string, unknown> = {}): Promise<OkReply> {
    if (!this.connection?.isOpen) {
      return Promise.reject(new RowcastError("offline", "not connected; ephemeral events are never queued"));
    }
    return this.request({ type: "emit", room, event, data });
  }

  /** Listens to status changes; returns the function that stops it. */
  on(name: "status", listener: (status: Status) => void): () => void;
  /** Listens to every delivered event frame, once per room it reached; returns the function that stops it. */
  on(name: "event", listener: (frame: FrameOf<Events>) => void): () => void;
  /**
   * Listens to one event of the map in every room this client is in, each
   * stored event once even when it came through several rooms; returns the
   * function that stops it.
   */
  on<Name extends ListenedName<Events>>(name: Name, listener: (frame: FrameOf<Events, Name>) => void): () => void;
  on(name: string, listener: (value: any) => void): () => void {
    if (name === "status" || name === "event") return this.listeners[name].add(listener);
    return this.named.on(name, listener);
  }

  /** The last stored seq delivered for `room`, or its stored cursor. */
  lastSeq(room: string): number | undefined {
    return this.rooms.lastSeq(room);
  }

  /** Closes the connection for good; subscriptions end, cursors stay in their store. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.rooms.clear();
    this.connection?.close();
    this.setStatus("closed");
    this.listeners.status.clear();
    this.listeners.event.clear();
    this.named.clear();
  }

  private async connect(refused: boolean): Promise<void> {
    this.retryTimer = undefined;
    try {
      const token = await this.tokens.forConnect(refused);
      if (this.closed) return;
      this.connection = new Connection(
        this.WebSocket,
        this.url,
        token,
        {
          welcome: (welcome) => this.onWelcome(welcome),
          frame: (frame) => this.onFrame(frame),
          ended: (ended) => this.onEnded(ended),
        },
        { connectTimeoutMs: this.connectTimeoutMs },
      );
    } catch {
      // The token source failed, or the WebSocket could not be created: try again later.
      if (!this.closed) this.retryLater(refused);
    }
  }

  private onWelcome(welcome: Welcome): void {
    this.noteHead(welcome.head);
    this.everOpened = true;
    this.openedAt = Date.now();
    this.setStatus("open");
    this.tokens.arm();
    this.rooms.connected();
  }

  private onFrame(frame: ServerFrame): void {
    switch (frame.type) {
      case "event":
        if (typeof frame.seq === "number") this.noteHead(frame.seq);
        if (this.rooms.deliver(frame) === "dropped") break;
        this.listeners.event.emit(frame);
        this.named.dispatch(frame);
        break;
      case "reply":
        if (frame.ok && typeof frame.head === "number") this.noteHead(frame.head);
        this.requests.settle(frame);
        break;
      case "left":
        this.rooms.removed(frame.room, frame.reason);
        break;
    }
  }

  private onEnded(ended: Ended): void {
    this.connection = undefined;
    this.tokens.disarm();
    this.requests.failAll();
    this.rooms.disconnected();
    if (this.closed) return;
    if (ended.welcomed && Date.now() - this.openedAt >= this.reconnect.stableAfterMs) this.backoff.reset();
    if (ended.code === CloseCode.RateLimited) this.backoff.saturate();
    this.setStatus(this.everOpened ? "reconnecting" : "connecting");
    this.retryLater(wasRefused(ended));
  }

  private retryLater(refused: boolean): void {
    this.retryTimer = setTimeout(() => void this.connect(refused), this.backoff.next());
  }

  private request(frame: ClientFrame): Promise<OkReply> {
    return this.requests.request(frame, (framed) => this.connection?.send(framed) ?? false);
  }

  private noteHead(seq: number): void {
    if (this.head === undefined || seq > this.head) this.head = seq;
  }

  private setStatus(status: Status): void {
    if (status === this.currentStatus) return;
    this.currentStatus = status;
    this.listeners.status.emit(status);
  }
}

/**
 * Whether the token was (or may have been) refused: a 4001 close, an HTTP
 * 401 at the upgrade, or an upgrade that failed without saying why, which
 * is how browsers show a 401.
 */
function wasRefused(ended: Ended): boolean {
  if (ended.code === CloseCode.TokenExpired || ended.httpStatus === 401) return true;
  return !ended.welcomed && !ended.explained && !ended.timedOut;
}

/**
 * The WebSocket endpoint for a relay's base URL: `ws://host:3001` (or
 * `http://`) becomes `ws://host:3001/v1/ws`; a URL with a path is kept.
 */
export function endpointUrl(url: string): string {
  const parsed = new URL(url);
  if (parsed.protocol === "http:") parsed.protocol = "ws:";
  if (parsed.protocol === "https:") parsed.protocol = "wss:";
  if (parsed.pathname === "" || parsed.pathname === "/") parsed.pathname = "/v1/ws";
  return parsed.toString();
}

function checkedUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError("rowcast: `url` is not a URL");
  }
  if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
    throw new TypeError(`rowcast: the URL must start with ws:// or wss://, got ${parsed.protocol}//`);
  }
  return url;
}

function defaultWebSocket(): WebSocketConstructor {
  const WebSocket = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (!WebSocket) throw new Error("rowcast: no global WebSocket here; pass the `WebSocket` option (in Node 20, the ws package)");
  return WebSocket;
}
