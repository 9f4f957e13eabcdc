/**
 * The seed's React hook for the demo schema: the core `useRealtime` typed
 * with the demo's events map, plus one `on<EventName>` registrar per
 * catalog event, one `join<Kind>Room` per room kind and `sendMessage`, the
 * names the seed's hook had. `@rowcast/client/demo/react`.
 */

import { useMemo } from "react";

import type { Handler } from "../handlers.js";
import type { FrameOf } from "../events.js";
import { useRealtime as useCoreRealtime, type HookOptions, type Realtime } from "../react.js";
import {
  CATALOG_EVENTS,
  ROOM_KINDS,
  emitAccepted,
  joinerName,
  registrarName,
  roomOf,
  type CatalogEvent,
  type DemoEvents,
  type JoinerName,
  type RegistrarName,
  type RoomKind,
} from "./catalog.js";

export { RealtimeProvider, useRoom, type ConnectionStatus, type HookOptions, type UseRoomOptions } from "../react.js";

/** `onContentCreated(handler)` and so on, one per catalog event; each returns its unsubscribe function. */
export type EventRegistrars = {
  [E in CatalogEvent as RegistrarName<E>]: (handler: (frame: FrameOf<DemoEvents, E>) => void) => () => void;
};

/** `joinContentRoom(id)` and so on; each returns the function that leaves again. */
export type RoomJoiners = {
  [K in RoomKind as JoinerName<K>]: (id: string | number) => () => void;
};

/** The seed's functions besides the registrars and joiners. */
export interface SeedFunctions {
  /** An ephemeral `message` (`{ text }`) to `user_{userId}`; resolves whether the relay accepted it. */
  sendMessage(userId: string | number, text: string): Promise<boolean>;
  /** A handler for a catalog event. */
  on<E extends CatalogEvent>(event: E, handler: (frame: FrameOf<DemoEvents, E>) => void): () => void;
  /** A handler for any other event name. */
  on(event: string, handler: Handler): () => void;
}

export type RealtimeApi = Omit<Realtime<DemoEvents>, "on"> & EventRegistrars & RoomJoiners & SeedFunctions;

/** The named functions, made once per mounted hook from its stable `on`, `joinRoom` and `emit`. */
function seedFunctions(core: Pick<Realtime<DemoEvents>, "on" | "joinRoom" | "emit">): EventRegistrars & RoomJoiners & SeedFunctions {
  const on = core.on as (event: string, handler: Handler) => () => void;
  const named: Record<string, unknown> = {
    on,
    sendMessage: (userId: string | number, text: string) => emitAccepted(core, roomOf("user", userId), "message", { text }),
  };
  for (const event of CATALOG_EVENTS) named[registrarName(event)] = (handler: Handler) => on(event, handler);
  for (const kind of ROOM_KINDS) named[joinerName(kind)] = (id: string | number) => core.joinRoom(roomOf(kind, id));
  return named as unknown as EventRegistrars & RoomJoiners & SeedFunctions;
}

/**
 * The seed's hook: `useRealtime` of `@rowcast/client/react` (one shared
 * connection per URL, cleaned up on unmount, surviving StrictMode) with the
 * demo's named functions, all stable across renders.
 */
export function useRealtime(token: string | null | undefined, serverUrl: string, options: HookOptions = {}): RealtimeApi {
  const core = useCoreRealtime<DemoEvents>(token, serverUrl, options);
  const { on, joinRoom, emit } = core;
  const named = useMemo(() => seedFunctions({ on, joinRoom, emit }), [on, joinRoom, emit]);
  return useMemo(() => ({ ...core, ...named }), [core, named]);
}

export default useRealtime;
