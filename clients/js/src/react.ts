/**
 * React bindings: the seed's `useRealtime(token, serverUrl)` hook, and
 * `useRoom(room, handler)` for one room's events. Components share one
 * client per URL, closed when the last of them unmounts.
 */

import { createContext, createElement, useContext, useEffect, useMemo, useRef, useState, type ReactNode } from "react";

import { EventBus, type Handler } from "./bus.js";
import {
  CATALOG_EVENTS,
  ROOM_KINDS,
  endpointUrl,
  joinerName,
  registrarName,
  roomOf,
  sendMessage,
  type CatalogEvent,
  type JoinerName,
  type RegistrarName,
  type RoomKind,
} from "./catalog.js";
import { createClient, type ClientOptions, type RowcastClient, type Status } from "./client.js";
import type { EventFrame } from "./protocol.js";
import type { GapInfo, Subscription } from "./subscriptions.js";

/** The seed's status object. */
export interface ConnectionStatus {
  connected: boolean;
  status: Status;
}

/** `onContentCreated(handler)` and so on, one per catalog event; each returns its unsubscribe function. */
export type EventRegistrars = {
  [E in CatalogEvent as RegistrarName<E>]: (handler: (frame: EventFrame) => void) => () => void;
};

/** `joinContentRoom(id)` and so on; each returns the function that leaves again. */
export type RoomJoiners = {
  [K in RoomKind as JoinerName<K>]: (id: string | number) => () => void;
};

export type RealtimeApi = EventRegistrars &
  RoomJoiners & {
    connectionStatus: ConnectionStatus;
    /** An ephemeral `message` (`{ text }`) to `user_{userId}`; resolves whether the relay accepted it. */
    sendMessage(userId: string | number, text: string): Promise<boolean>;
    /** A handler for any event name. */
    on(event: string, handler: Handler): () => void;
    /** Joins any room; returns the function that leaves again. */
    joinRoom(room: string): () => void;
    /** The shared client once connected (for `RealtimeProvider`), else `undefined`. */
    client: RowcastClient | undefined;
  };

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

/**
 * What one mounted hook holds across renders: its handlers and the rooms it
 * joined. Both are kept while no client is attached (before the effect
 * runs, or between StrictMode's unmount and remount) and applied on attach.
 */
class HookSession {
  readonly bus = new EventBus();
  private readonly wanted = new Set<Wanted>();
  private client: RowcastClient | undefined;
  private stopEvents: (() => void) | undefined;

  attach(client: RowcastClient): void {
    this.client = client;
    this.stopEvents = client.on("event", (frame) => this.bus.dispatch(frame));
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

  /** The stable part of the hook's result. */
  api(): Omit<RealtimeApi, "connectionStatus" | "client"> {
    const api: Record<string, unknown> = {
      sendMessage: (userId: string | number, text: string) => sendMessage(this.client, userId, text),
      on: (event: string, handler: Handler) => this.bus.on(event, handler),
      joinRoom: (room: string) => this.join(room),
    };
    for (const event of CATALOG_EVENTS) api[registrarName(event)] = (handler: Handler) => this.bus.on(event, handler);
    for (const kind of ROOM_KINDS) api[joinerName(kind)] = (id: string | number) => this.join(roomOf(kind, id));
    return api as Omit<RealtimeApi, "connectionStatus" | "client">;
  }
}

/**
 * The seed's hook. Connects when `token` is set (a base URL like
 * `ws://localhost:3001` gets `/v1/ws`), shares the connection with every
 * other component using the same URL, and cleans up on unmount: handlers
 * removed, rooms left (once no component wants them), the connection
 * closed with the last user. A new `token` does not reconnect: it is used
 * for the next connection and sent as `auth` before the current one expires.
 */
export function useRealtime(token: string | null | undefined, serverUrl: string, options: HookOptions = {}): RealtimeApi {
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

  const stable = useMemo(() => session.api(), [session]);
  return useMemo(
    () => ({ ...stable, client, connectionStatus: { connected: status === "open", status } }) as RealtimeApi,
    [stable, client, status],
  );
}

const RealtimeContext = createContext<RowcastClient | undefined>(undefined);

/** Provides a client to `useRoom` below it. */
export function RealtimeProvider(props: { client: RowcastClient | undefined; children?: ReactNode }): ReactNode {
  return createElement(RealtimeContext.Provider, { value: props.client }, props.children);
}

export interface UseRoomOptions {
  /** The client to use instead of the `RealtimeProvider`'s. */
  client?: RowcastClient;
  since?: number;
  onGap?(info: GapInfo): void;
  onLeft?(reason: string): void;
}

/**
 * Calls `handler` with each event of `room` (stored ones exactly once, in
 * seq order, across reconnects) while the component is mounted. Changing
 * `handler` does not rejoin; changing `room` leaves the old one.
 */
export function useRoom<Data = Record<string, unknown>>(
  room: string | null | undefined,
  handler: (frame: EventFrame<Data>) => void,
  options: UseRoomOptions = {},
): void {
  const provided = useContext(RealtimeContext);
  const client = options.client ?? provided;
  const latest = useRef({ handler, options });
  latest.current = { handler, options };

  useEffect(() => {
    if (!client || !room) return;
    const subscription = client.subscribe<Data>(room, {
      since: latest.current.options.since,
      onEvent: (frame) => latest.current.handler(frame),
      onGap: (info) => latest.current.options.onGap?.(info),
      onLeft: (reason) => latest.current.options.onLeft?.(reason),
    });
    return () => subscription.unsubscribe();
  }, [client, room]);
}

export default useRealtime;
