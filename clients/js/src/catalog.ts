/**
 * The event catalog and room kinds of the demo schema, as names, and the
 * seed's conventions for emits: what the seed's API (the compat singleton
 * and the React hook) is built from. Kept apart from the core, which knows
 * no event names.
 */

import type { RowcastClient } from "./client.js";

/** Every event of the catalog, stored and ephemeral. */
export const CATALOG_EVENTS = [
  "content-created",
  "content-updated",
  "content-deleted",
  "content-rated",
  "content-viewed",
  "chapter-created",
  "chapter-updated",
  "chapter-deleted",
  "user-profile-updated",
  "user-status-changed",
  "friend-request-sent",
  "friend-request-received",
  "friend-request-accepted",
  "friend-request-rejected",
  "friendship-ended",
  "calendar-event-created",
  "calendar-event-updated",
  "calendar-event-deleted",
  "calendar-invite-received",
  "calendar-invite-accepted",
  "calendar-invite-rejected",
  "media-uploaded",
  "media-updated",
  "media-deleted",
  "album-created",
  "album-updated",
  "album-deleted",
  "diary-entry-created",
  "diary-entry-updated",
  "diary-entry-deleted",
  "message-sent",
  "message-received",
  "message",
  "payment-completed",
  "subscription-updated",
  "ad-view-logged",
  "notification",
  "notification-read",
  "announcement",
  "user-typing",
  "user-editing",
] as const;

export type CatalogEvent = (typeof CATALOG_EVENTS)[number];

/** `content-created` → `ContentCreated`. */
type Pascal<S extends string> = S extends `${infer Head}-${infer Tail}`
  ? `${Capitalize<Head>}${Pascal<Tail>}`
  : Capitalize<S>;

/** `content-created` → `onContentCreated`. */
export type RegistrarName<E extends string> = `on${Pascal<E>}`;

export function registrarName<E extends string>(event: E): RegistrarName<E> {
  const words = event.split("-").map((word) => word.charAt(0).toUpperCase() + word.slice(1));
  return `on${words.join("")}` as RegistrarName<E>;
}

/** The kinds of room named `{kind}_{id}`. */
export const ROOM_KINDS = ["content", "calendar", "media", "album", "diary", "user"] as const;

export type RoomKind = (typeof ROOM_KINDS)[number];

/** `content` → `joinContentRoom`. */
export type JoinerName<K extends RoomKind> = `join${Capitalize<K>}Room`;

export function joinerName<K extends RoomKind>(kind: K): JoinerName<K> {
  return `join${kind.charAt(0).toUpperCase()}${kind.slice(1)}Room` as JoinerName<K>;
}

/** The room of one thing: `roomOf("content", 42)` is `content_42`. */
export function roomOf(kind: RoomKind, id: string | number): string {
  return `${kind}_${id}`;
}

/**
 * The WebSocket endpoint for a URL as the seed took it: `ws://host:3001`
 * (or `http://`) becomes `ws://host:3001/v1/ws`; a URL with a path is kept.
 */
export function endpointUrl(url: string): string {
  const parsed = new URL(url);
  if (parsed.protocol === "http:") parsed.protocol = "ws:";
  if (parsed.protocol === "https:") parsed.protocol = "wss:";
  if (parsed.pathname === "" || parsed.pathname === "/") parsed.pathname = "/v1/ws";
  return parsed.toString();
}

/**
 * An ephemeral event, the seed's way: resolves whether the relay accepted
 * it, `false` when offline or refused, and never rejects, so code that
 * ignores the result (as Socket.IO code does) leaves no unhandled rejection.
 */
export function emitAccepted(
  client: RowcastClient | undefined,
  room: string,
  event: string,
  data: Record<string, unknown>,
): Promise<boolean> {
  if (!client) return Promise.resolve(false);
  return client.emit(room, event, data).then(
    () => true,
    () => false,
  );
}

/** The seed's `sendMessage`: a `message` carrying `{ text }` to `user_{userId}`. */
export function sendMessage(client: RowcastClient | undefined, userId: string | number, text: string): Promise<boolean> {
  return emitAccepted(client, roomOf("user", userId), "message", { text });
}
