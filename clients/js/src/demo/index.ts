/**
 * `@rowcast/client/demo`: the demo schema (`sql/demo.sql` with the default
 * routes) for the client. Its events map, `DemoEvents`, for
 * `createClient<DemoEvents>(...)`; the generated types of each event's
 * `data` and `old`; the catalog's names and room kinds; and the seed's
 * Socket.IO-style singleton, also `@rowcast/client/compat`. The seed's
 * React hook is `@rowcast/client/demo/react`. An app on its own schema
 * needs none of this: it types the core client with its own `rowcast types`.
 */

export * from "./events.js";
export {
  CATALOG_EVENTS,
  CLIENT_EVENTS,
  ROOM_KINDS,
  emitAccepted,
  joinerName,
  registrarName,
  roomOf,
  sendMessage,
  type CatalogEvent,
  type ClientEvent,
  type DemoEvents,
  type Emitter,
  type JoinerName,
  type RegistrarName,
  type RoomKind,
} from "./catalog.js";
export { default as realtimeClient, RealtimeClient, type ConnectOptions } from "./compat.js";
