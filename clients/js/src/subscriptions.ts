/**
 * Subscriptions: the rooms this client is in, who listens to each, and
 * where each room is in its stream of stored events. The relay delivers a
 * room's events in seq order on one connection; this module carries that
 * order across connections.
 */

import { Backoff } from "./backoff.js";
import type { CursorStore } from "./cursors.js";
import type { EventMap, FrameOf, UntypedEvents } from "./events.js";
import { callSafely } from "./listeners.js";
import type { EventFrame, JoinReply, OkReply, RowcastError } from "./protocol.js";

/** What `onGap` is told: events after `since` are partly gone, reload the room's state. */
export interface GapInfo {
  room: string;
  /** The `since` the join asked for. */
  since: number;
  /** The newest seq when the relay answered. */
  head: number;
}

/** How to follow one room; `Events` types the frames `onEvent` gets. */
export interface SubscribeOptions<Events extends EventMap<Events> = UntypedEvents> {
  /**
   * Replay the stored events after this seq. Defaults to the room's stored
   * cursor; with neither, the subscription is live from now on. Used by the
   * subscription that joins the room; one added to a room already joined
   * starts where the room is.
   */
  since?: number;
  /** Each stored event once, in seq order; ephemeral events as they come. */
  onEvent?(frame: FrameOf<Events>): void;
  /** The relay no longer holds all events after the cursor: reload state. */
  onGap?(info: GapInfo): void;
  /** The relay removed this client from the room (protocol 1.1 `left`); it is not rejoined. */
  onLeft?(reason: string): void;
  /** The relay refused the join (`forbidden`, `bad_request`, ...); it is not retried. */
  onError?(error: RowcastError): void;
}

export interface Subscription {
  readonly room: string;
  /** Stops this subscription; the room is left when it was the last one. Idempotent. */
  unsubscribe(): void;
}

/** What the rooms need from the client's connection. */
export interface RoomLink {
  /** Whether a join can be sent now (the welcome arrived). */
  isOpen(): boolean;
  join(room: string, since: number | undefined): Promise<OkReply>;
  leave(room: string): Promise<unknown>;
  /** The newest seq the client has seen (welcome, replies, events). */
  head(): number | undefined;
}

/** Where a frame went. */
export type Delivery = "delivered" | "dropped" | "unknown";

interface Subscriber {
  options: SubscribeOptions;
}

/** Errors after which a join is tried again on the same connection. */
const RETRIED = new Set(["internal", "rate_limited"]);

/**
 * One room on this client, shared by every subscription to it.
 *
 * Guarantees:
 * - One server `join` per connection, however many subscriptions (reference
 *   counted). The last unsubscribe leaves only after `leaveDelayMs`, and a
 *   subscribe before then cancels it, so React StrictMode's
 *   mount-unmount-mount neither leaves nor joins twice.
 * - Each stored event reaches each subscription exactly once, in seq order:
 *   a frame whose seq is not above `position` is dropped, whether it comes
 *   from a replay, a live push or the overlap after a reconnect. Ephemeral
 *   frames (no seq) pass through.
 * - Every join, the first and each one after a reconnect, asks for
 *   `since = position`, so nothing the relay retains is missed; when it no
 *   longer retains them the join reply says `gap` and `onGap` fires.
 */
class Room {
  readonly subscribers = new Set<Subscriber>();
  /**
   * The seq this room is caught up to: the last stored event delivered, or
   * the relay's head when a live-only subscription joined. `undefined` only
   * before the first join.
   */
  position: number | undefined;
  /** The last stored seq delivered to the subscriptions. */
  lastSeq: number | undefined;
  /** `joining` from the join frame to its reply, on the current connection. */
  state: "idle" | "joining" | "joined" = "idle";
  /** Tells a reply to an earlier join from the reply to the current one. */
  attempt = 0;
  leaveTimer: ReturnType<typeof setTimeout> | undefined;
  retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** Spaces retries of a join the relay could not answer (`internal`, `rate_limited`). */
  readonly retries = new Backoff({ minDelayMs: 500, maxDelayMs: 10_000, stableAfterMs: 0 });

  constructor(
    readonly name: string,
    since: number | undefined,
  ) {
    this.position = since;
  }

  stopTimers(): void {
    clearTimeout(this.leaveTimer);
    clearTimeout(this.retryTimer);
    this.leaveTimer = this.retryTimer = undefined;
  }

  /** Runs `callback` for each subscription (a copy: callbacks may unsubscribe). */
  each(callback: (options: SubscribeOptions) => void): void {
    for (const subscriber of [...this.subscribers]) callback(subscriber.options);
  }
}

/** Every room of one client. */
export class Rooms {
  private readonly rooms = new Map<string, Room>();
  /** Rooms whose `leave` is on its way: their frames are stale. */
  private readonly leaving = new Set<string>();

  constructor(
    private readonly cursors: CursorStore,
    private readonly link: RoomLink,
    private readonly leaveDelayMs: number,
  ) {}

  subscribe(name: string, options: SubscribeOptions): Subscription {
    let room = this.rooms.get(name);
    if (!room) {
      room = new Room(name, options.since ?? this.cursors.get(name));
      this.rooms.set(name, room);
    }
    clearTimeout(room.leaveTimer);
    room.leaveTimer = undefined;
    const subscriber: Subscriber = { options };
    room.subscribers.add(subscriber);
    if (room.state === "idle" && room.retryTimer === undefined && this.link.isOpen()) this.join(room);
    const joined = room;
    let active = true;
    return {
      room: name,
      unsubscribe: () => {
        if (active) this.release(joined, subscriber);
        active = false;
      },
    };
  }

  /** The last stored seq delivered for `room` (or its stored cursor). */
  lastSeq(name: string): number | undefined {
    return this.rooms.get(name)?.lastSeq ?? this.cursors.get(name);
  }

  /** A connection opened: join every room, each from its position. */
  connected(): void {
    this.leaving.clear();
    for (const room of [...this.rooms.values()]) {
      if (room.subscribers.size === 0) {
        this.forget(room); // its leave was pending: nothing to join, nothing to leave
        continue;
      }
      clearTimeout(room.retryTimer);
      room.retryTimer = undefined;
      this.join(room);
    }
  }

  /** The connection ended: every room waits for the next one. */
  disconnected(): void {
    this.leaving.clear();
    for (const room of this.rooms.values()) {
      room.state = "idle";
      clearTimeout(room.retryTimer);
      room.retryTimer = undefined;
    }
  }

  /** Routes an event frame to its room's subscriptions, dropping what they already had. */
  deliver(frame: EventFrame): Delivery {
    const room = this.rooms.get(frame.room);
    if (!room) return this.leaving.has(frame.room) ? "dropped" : "unknown";
    if (typeof frame.seq === "number") {
      if (room.position !== undefined && frame.seq <= room.position) return "dropped";
      room.position = room.lastSeq = frame.seq;
      this.cursors.set(room.name, frame.seq);
    }
    room.each((options) => callSafely(options.onEvent, frame));
    return "delivered";
  }

  /** The relay removed this client from `name` (`left`): tell its subscriptions, never rejoin. */
  removed(name: string, reason: string): void {
    const room = this.rooms.get(name);
    if (!room) return;
    this.forget(room);
    room.each((options) => callSafely(options.onLeft, reason));
  }

  /** The client closed: every room is forgotten (cursors stay in the store). */
  clear(): void {
    for (const room of this.rooms.values()) room.stopTimers();
    this.rooms.clear();
    this.leaving.clear();
  }

  private release(room: Room, subscriber: Subscriber): void {
    room.subscribers.delete(subscriber);
    if (room.subscribers.size > 0 || this.rooms.get(room.name) !== room) return;
    clearTimeout(room.leaveTimer);
    room.leaveTimer = setTimeout(() => this.leave(room), this.leaveDelayMs);
  }

  private leave(room: Room): void {
    room.leaveTimer = undefined;
    if (room.subscribers.size > 0 || this.rooms.get(room.name) !== room) return;
    const wasJoined = room.state !== "idle";
    this.forget(room);
    if (!wasJoined || !this.link.isOpen()) return;
    this.leaving.add(room.name);
    const done = () => this.leaving.delete(room.name);
    this.link.leave(room.name).then(done, done);
  }

  private forget(room: Room): void {
    room.stopTimers();
    room.state = "idle";
    this.rooms.delete(room.name);
  }

  private join(room: Room): void {
    const since = room.position ?? this.link.head();
    room.position = since;
    room.state = "joining";
    const attempt = ++room.attempt;
    const current = () => this.rooms.get(room.name) === room && room.attempt === attempt && room.state === "joining";
    this.link.join(room.name, since).then(
      (reply) => current() && this.joined(room, since, reply as JoinReply),
      (error: RowcastError) => current() && this.refused(room, error),
    );
  }

  private joined(room: Room, since: number | undefined, reply: JoinReply): void {
    room.state = "joined";
    room.retries.reset();
    if (reply.gap && since !== undefined) {
      const info: GapInfo = { room: room.name, since, head: reply.head };
      room.each((options) => callSafely(options.onGap, info));
    }
  }

  private refused(room: Room, error: RowcastError): void {
    room.state = "idle";
    if (error.code === "offline" || error.code === "disconnected") return; // rejoined on the next connection
    if (RETRIED.has(error.code)) {
      room.retryTimer = setTimeout(() => {
        room.retryTimer = undefined;
        if (this.rooms.get(room.name) === room && this.link.isOpen()) this.join(room);
      }, room.retries.next());
      return;
    }
    this.forget(room);
    room.each((options) => callSafely(options.onError, error));
  }
}
