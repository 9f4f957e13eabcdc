/**
 * `@rowcast/client`: realtime events from committed Postgres row changes,
 * with reconnect, resume by seq and exactly-once delivery per room, typed
 * by the app's own events map (the `RowcastEvents` that `rowcast types`
 * generates). React bindings are in `@rowcast/client/react`; the demo
 * schema's catalog and the seed's Socket.IO-style API in
 * `@rowcast/client/demo` and `@rowcast/client/compat`.
 */

export { createClient, endpointUrl, RowcastClient, type ClientEvents, type ClientOptions, type Status } from "./client.js";
export { localStorageCursors, memoryCursors, type CursorStorage, type CursorStore, type LocalStorageCursorsOptions } from "./cursors.js";
export type {
  DataOf,
  EventFrameWithOld,
  EventMap,
  EventName,
  EventShape,
  FrameOf,
  ListenedName,
  OldOf,
  ReservedName,
  UntypedEvents,
} from "./events.js";
export type { ReconnectOptions } from "./backoff.js";
export type { GapInfo, SubscribeOptions, Subscription } from "./subscriptions.js";
export type { WebSocketConstructor, WebSocketLike } from "./socket.js";
export { tokenExpiry, type TokenReason, type TokenSource } from "./token.js";
export {
  CloseCode,
  RowcastError,
  type ErrorCode,
  type EventFrame,
  type JoinReply,
  type OkReply,
  type Reply,
  type Welcome,
} from "./protocol.js";
