/**
 * React bindings: `useRealtime(token, serverUrl)`, one connection per URL
 * shared by every component using it and closed when the last of them
 * unmounts, and `useRoom(room, handler)` for one room's events. Both are
 * typed by the app's events map (`useRealtime<RowcastEvents>(...)`) and
 * know no event names; the demo schema's named functions
 * (`@rowcast/client/demo/react`) are built on top of them.
 */

import { createContext, createElement, useContext, useEffect, useMemo, useRef, useState, type ReactNode } from "react";

import { EventHandlers, type Handler } from "./handlers.js";
import { createClient, endpointUrl, type ClientOptions, type RowcastClient, type Status } from "./client.js";
import type { EventMap, EventName, FrameOf, UntypedEvents } from "./events.js";
import { RowcastError, type OkReply } from "./protocol.js";
import type { GapInfo, Subscription } from "./subscriptions.js";

/** The connection's state, as the seed's hook reported it. */
export interface ConnectionStatus {
  connected: boolean;
  status: Status;
}

/** What `useRealtime` returns. Everything but `connectionStatus` and `client` is stable across renders. */
export interface Realtime<Events extends EventMap<Events> = UntypedEvents> {
  connectionStatus: ConnectionStatus;
  /**
   * Listens to one event in every room the shared connection joined, each
   * stored event once even when it came through several rooms; returns the
   * function that stops it.
   */
  on<Name extends EventName<Events>>(name: Name, handler: (frame: FrameOf<Events, Name>) => void): () => void;
  /** Joins a room while this component wants it; returns the function that leaves again. */
  joinRoom(room: string): () => void;
  /** An ephemeral event to a joined room, as `client.emit`: rejects (`offline`) when not connected, never queued. */
  emit(room: string, event: string, data?: Record<string, unknown>): Promise<OkReply>;
  /** The shared client once connected (for `RealtimeProvider`), else `undefined`. */
  client: RowcastClient<Events> | undefined;
}

/** Options of the shared client, taken from the first component that creates it. */
export type HookOptions = Omit<ClientOptions, "url" | "token">;

/** One client per URL, shared by every mounted hook; its token is the latest one rendered. */
interface Pooled {
  client: RowcastClient;
  token: string;
  users: number;
  closeTimer: ReturnType<typeof setTimeout> | undefined;
}

const pool = new Map<string, Pooled>();

/**
 * Takes the URL's shared client, creating it on first use. A release
 * closes it only on the next task, so StrictMode's unmount-remount keeps
 * the same connection and joins.
 */
function acquire(url: string, token: string, options: HookOptions): Pooled {
  let entry = pool.get(url);
  if (!entry) {
    const created: Pooled = { token, users: 0, closeTimer: undefined } as Pooled;
    created.client = createClient({ ...options, url, token: () => created.token });
    pool.set(url, (entry = created));
  }
  clearTimeout(entry.closeTimer);
  entry.users += 1;
  return entry;
}

function release(url: string, entry: Pooled): void {
  entry.users -= 1;
  if (entry.users > 0) return;
  entry.closeTimer = setTimeout(() => {
    if (entry.users > 0 || pool.get(url) !== entry) return;
    pool.delete(url);
    entry.client.close();
  }, 0);
}

/** A room asked for through the hook, and its subscription while a client is attached. */
interface Wanted {
  room: string;
  subscription: Subscription | undefined;
}

/** The stable part of `Realtime`. */
type Stable<Events extends EventMap<Events>> = Pick<Realtime<Events>, "on" | "joinRoom" | "emit">;

/**
 * What one mounted hook holds across renders: its handlers and the rooms it
 * joined. Both are kept while no client is attached (before the effect
 * runs, or between StrictMode's unmount and remount) and applied on attach.
 */
class HookSession {
  readonly handlers = new EventHandlers();
  private readonly wanted = new Set<Wanted>();
  private client: RowcastClient | undefined;
  private stopEvents: (() => void) | undefined;

  attach(client: RowcastClient): void {
    this.client = client;
    this.stopEvents = client.on("event", (frame) => this.handlers.dispatch(frame));
    for (const wanted of this.wanted) wanted.subscription = client.subscribe(wanted.room);
  }

  detach(): void {
    this.stopEvents?.();
    for (const wanted of this.wanted) wanted.subscription?.unsubscribe();
    for (const wanted of this.wanted) wanted.subscription = undefined;
    this.client = undefined;
  }

  join(room: string): () => void {
    const wanted: Wanted = { room, subscription: this.client?.subscribe(room) };
    this.wanted.add(wanted);
    return () => {
      wanted.subscription?.unsubscribe();
      this.wanted.delete(wanted);
    };
  }

  emit(room: string, event: string, data: Record<string, unknown> = {}): Promise<OkReply> {
    if (!this.client) return Promise.reject(new RowcastError("offline", "not connected; ephemeral events are never queued"));
    return this.client.emit(room, event, data);
  }

  api<Events extends EventMap<Events>>(): Stable<Events> {
    return {
      on: (name: string, handler: Handler) => this.handlers.on(name, handler),
      joinRoom: (room) => this.join(room),
      emit: (room, event, data) => this.emit(room, event, data),
    };
  }
}

/**
 * Connects when `token` is set (a base URL like `ws://localhost:3001` gets
 * `/v1/ws`), shares the connection with every other component using the
 * same URL, and cleans up on unmount: handlers removed, rooms left (once no
 * component wants them), the connection closed with the last user. A new
 * `token` does not reconnect: it is used for the next connection and sent
 * as `auth` before the current one expires. `Events` types `on` and
 * `client` (`useRealtime<RowcastEvents>(token, url)`).
 */
export function useRealtime<Events extends EventMap<Events> = UntypedEvents>(
  token: string | null | undefined,
  serverUrl: string,
  options: HookOptions = {},
): Realtime<Events> {
  const url = endpointUrl(serverUrl);
  const [session] = useState(() => new HookSession());
  const [client, setClient] = useState<RowcastClient>();
  const [status, setStatus] = useState<Status>(token ? "connecting" : "closed");
  const optionsRef = useRef(options);
  const hasToken = Boolean(token);

  useEffect(() => {
    if (token) {
      const entry = pool.get(url);
      if (entry) entry.token = token;
    }
  }, [url, token]);

  useEffect(() => {
    if (!token) {
      setClient(undefined);
      setStatus("closed");
      return;
    }
    const entry = acquire(url, token, optionsRef.current);
    session.attach(entry.client);
    setClient(entry.client);
    setStatus(entry.client.status);
    const stopStatus = entry.client.on("status", setStatus);
    return () => {
      stopStatus();
      session.detach();
      release(url, entry);
    };
    // Only the token's presence (re)connects; a new token is picked up by the effect above.
  }, [url, hasToken, session]);

  const stable = useMemo(() => session.api<Events>(), [session]);
  return useMemo(
    () => ({
      ...stable,
      client: client as RowcastClient<Events> | undefined,
      connectionStatus: { connected: status === "open", status },
    }),
    [stable, client, status],
  );
}

/** Any client: its type parameter only types what it hands out, so one context serves every map. */
type AnyClient = RowcastClient<any>;

const RealtimeContext = createContext<AnyClient | undefined>(undefined);

/** Provides a client to `useRoom` below it. */
export function RealtimeProvider(props: { client: AnyClient | undefined; children?: ReactNode }): ReactNode {
  return createElement(RealtimeContext.Provider, { value: props.client }, props.children);
}

export interface UseRoomOptions<Events extends EventMap<Events> = UntypedEvents> {
  /** The client to use instead of the `RealtimeProvider`'s; a typed one types the handler's frames. */
  client?: RowcastClient<Events>;
  since?: number;
  onGap?(info: GapInfo): void;
  onLeft?(reason: string): void;
}

/**
 * Calls `handler` with each event of `room` (stored ones exactly once, in
 * seq order, across reconnects) while the component is mounted. Changing
 * `handler` does not rejoin; changing `room` leaves the old one. The frames
 * are typed by the `client` option's map, or by `useRoom<Events>(...)`.
 */
export function useRoom<Events extends EventMap<Events> = UntypedEvents>(
  room: string | null | undefined,
  handler: (frame: FrameOf<Events>) => void,
  options: UseRoomOptions<Events> = {},
): void {
  const provided = useContext(RealtimeContext) as RowcastClient<Events> | undefined;
  const client = options.client ?? provided;
  const latest = useRef({ handler, options });
  latest.current = { handler, options };

  useEffect(() => {
    if (!client || !room) return;
    const subscription = client.subscribe(room, {
      since: latest.current.options.since,
      onEvent: (frame) => latest.current.handler(frame),
      onGap: (info) => latest.current.options.onGap?.(info),
      onLeft: (reason) => latest.current.options.onLeft?.(reason),
    });
    return () => subscription.unsubscribe();
  }, [client, room]);
}

export default useRealtime;
