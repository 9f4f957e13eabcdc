/**
 * The seed's Socket.IO wrapper, kept: a default-exported singleton with
 * `connect`, `on`/`off` by event name, `join<Kind>Room`, `sendMessage` and
 * `disconnect`, so code written against it only changes its import.
 * Handlers receive the protocol's event frame (`data`, `old`, `seq`,
 * `room`), as the relay's Socket.IO endpoint delivers it; `connect` and
 * `disconnect` are emitted like Socket.IO's. This is the demo schema's API
 * (`@rowcast/client/compat`); an app on its own schema uses the core client.
 */

import { EventHandlers, type Handler } from "../handlers.js";
import { createClient, endpointUrl, type ClientOptions, type RowcastClient, type Status } from "../client.js";
import type { FrameOf } from "../events.js";
import type { Subscription } from "../subscriptions.js";
import type { TokenSource } from "../token.js";
import { emitAccepted, roomOf, sendMessage, type CatalogEvent, type DemoEvents, type RoomKind } from "./catalog.js";

/** Options of `connect` beyond the seed's two arguments. */
export type ConnectOptions = Omit<ClientOptions, "url" | "token">;

/**
 * Guarantees: a room joined with `join*Room` stays joined across
 * reconnects until `leaveRoom` or `disconnect`, resuming without loss or
 * repeat; each stored event reaches a handler once even when it came
 * through two joined rooms; `sendMessage` never queues and never throws.
 */
export class RealtimeClient {
  private client: RowcastClient<DemoEvents> | undefined;
  private readonly handlers = new EventHandlers();
  /** Joined rooms; kept from before `connect` too, as Socket.IO buffers early emits. */
  private readonly rooms = new Map<string, Subscription | undefined>();
  private wasOpen = false;

  /** Connects to `url` (`ws://host:3001` gets `/v1/ws`); a previous connection is closed. */
  connect(url: string, token: TokenSource, options: ConnectOptions = {}): RowcastClient<DemoEvents> {
    this.close();
    const client = createClient<DemoEvents>({ ...options, url: endpointUrl(url), token });
    this.client = client;
    client.on("event", (frame) => this.handlers.dispatch(frame));
    client.on("status", (status) => this.onStatus(status));
    for (const room of this.rooms.keys()) this.rooms.set(room, client.subscribe(room));
    return client;
  }

  /** Listens to a catalog event; returns the function that stops it. */
  on<E extends CatalogEvent>(event: E, handler: (frame: FrameOf<DemoEvents, E>) => void): () => void;
  /** `connect` once a connection opens; `disconnect`, with the status, when it ends. */
  on(event: "connect" | "disconnect", handler: (status?: Status) => void): () => void;
  /** Listens to any other event name. */
  on(event: string, handler: Handler): () => void;
  on(event: string, handler: Handler): () => void {
    return this.handlers.on(event, handler);
  }

  off(event: string, handler: Handler): void {
    this.handlers.off(event, handler);
  }

  /** Whether the connection is open now. */
  get connected(): boolean {
    return this.client?.status === "open";
  }

  /** The core client underneath, for what the seed's API lacks (cursors, `lastSeq`). */
  get core(): RowcastClient<DemoEvents> | undefined {
    return this.client;
  }

  joinRoom(room: string): void {
    if (!this.rooms.has(room)) this.rooms.set(room, this.client?.subscribe(room));
  }

  leaveRoom(room: string): void {
    this.rooms.get(room)?.unsubscribe();
    this.rooms.delete(room);
  }

  joinContentRoom(id: string | number): void {
    this.joinKind("content", id);
  }

  joinCalendarRoom(id: string | number): void {
    this.joinKind("calendar", id);
  }

  joinMediaRoom(id: string | number): void {
    this.joinKind("media", id);
  }

  joinAlbumRoom(id: string | number): void {
    this.joinKind("album", id);
  }

  joinDiaryRoom(id: string | number): void {
    this.joinKind("diary", id);
  }

  joinUserRoom(id: string | number): void {
    this.joinKind("user", id);
  }

  /**
   * An ephemeral `message` (`{ text }`) to the members of `user_{userId}`;
   * resolves `true` when the relay accepted it, `false` when offline or
   * refused (the relay lets only members of a room emit to it).
   */
  sendMessage(userId: string | number, text: string): Promise<boolean> {
    return sendMessage(this.client, userId, text);
  }

  /** An ephemeral event to a joined room; resolves whether the relay accepted it. */
  emit(room: string, event: string, data: Record<string, unknown> = {}): Promise<boolean> {
    return emitAccepted(this.client, room, event, data);
  }

  /** Closes the connection and forgets the joined rooms; handlers stay. */
  disconnect(): void {
    this.close();
    this.rooms.clear();
  }

  private joinKind(kind: RoomKind, id: string | number): void {
    this.joinRoom(roomOf(kind, id));
  }

  private close(): void {
    const client = this.client;
    this.client = undefined;
    client?.close(); // its last status, `closed`, emits `disconnect` when it was open
    this.wasOpen = false;
  }

  private onStatus(status: Status): void {
    if (status === "open") {
      this.wasOpen = true;
      this.handlers.emit("connect", undefined);
    } else if (this.wasOpen) {
      this.wasOpen = false;
      this.handlers.emit("disconnect", status);
    }
  }
}

/** The singleton the seed exported. */
const realtimeClient = new RealtimeClient();

export default realtimeClient;
