/**
 * The rowcast client protocol v1 (and 1.1) as types: the frames the relay
 * sends, the frames a client sends, the close codes, and the error a failed
 * request rejects with. Parsing is deliberately shallow: the relay is the
 * authority on shapes, the client only needs `type` to route a frame.
 */

/** Error codes of a failed reply, plus two the client raises itself. */
export type ErrorCode =
  | "bad_request"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "rate_limited"
  | "too_large"
  | "internal"
  /** The client is not connected, so the request was not sent. */
  | "offline"
  /** The connection ended before the reply arrived. */
  | "disconnected";

/** The first frame of every connection. */
export interface Welcome {
  type: "welcome";
  /** The relay's id for this connection. */
  conn: string;
  /** The token's `sub`. */
  user: string;
  /** The newest stored seq when the connection opened. */
  head: number;
  /** How often the relay pings; the client's heartbeat follows it. */
  heartbeat_ms: number;
}

/**
 * An event frame. Stored events carry `seq` (global, increasing in commit
 * order, the same in every room the event went to) and `at`; ephemeral
 * events (client emits, presence-free extras) carry `from` and no `seq`.
 * A client typed with an events map hands out `FrameOf<Events, Name>`,
 * this frame with `event`, `data` and `old` narrowed to that event.
 */
export interface EventFrame<Data = Record<string, unknown>, Name extends string = string, Old = Partial<Data>> {
  type: "event";
  room: string;
  event: Name;
  seq?: number;
  /** Commit time (RFC 3339, UTC) of a stored event. */
  at?: string;
  data: Data;
  /** On updates: the previous values of the exposed columns that changed. */
  old?: Old;
  /** The sender's `sub`, on ephemeral events. */
  from?: string;
  /** How many changes or emits a coalesced frame stands for. */
  count?: number;
}

/** A successful reply; its other fields depend on the request. */
export interface OkReply {
  type: "reply";
  ref?: string;
  ok: true;
  [field: string]: unknown;
}

/** A refused request. */
export interface ErrorReply {
  type: "reply";
  ref?: string;
  ok: false;
  error: { code: ErrorCode; message: string };
}

export type Reply = OkReply | ErrorReply;

/** The reply to `join`. */
export interface JoinReply extends OkReply {
  room: string;
  head: number;
  replayed: number;
  /** `since` was older than what the relay retains: reload state. */
  gap?: boolean;
}

/** Protocol 1.1: the relay removed this connection from a room. */
export interface LeftFrame {
  type: "left";
  room: string;
  reason: string;
}

export interface PongFrame {
  type: "pong";
  ref?: string;
}

export type ServerFrame = Welcome | EventFrame | Reply | LeftFrame | PongFrame;

export type ClientFrame =
  | { type: "join"; room: string; since?: number; ref?: string }
  | { type: "leave"; room: string; ref?: string }
  | { type: "emit"; room: string; event: string; data: Record<string, unknown>; ref?: string }
  | { type: "auth"; token: string; ref?: string }
  | { type: "ping"; ref?: string };

/** Close codes with a meaning for the client (see the protocol's table). */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  /** Closed without a close frame (network, crash, or a client-side timeout). */
  Abnormal: 1006,
  TooBig: 1009,
  Internal: 1011,
  TokenExpired: 4001,
  TooSlow: 4008,
  RateLimited: 4029,
} as const;

const FRAME_TYPES = new Set(["welcome", "event", "reply", "left", "pong"]);

/** Parses one text frame; `undefined` for anything that is not a known frame. */
export function parseFrame(text: unknown): ServerFrame | undefined {
  if (typeof text !== "string") return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null) return undefined;
  const type = (value as { type?: unknown }).type;
  return typeof type === "string" && FRAME_TYPES.has(type) ? (value as ServerFrame) : undefined;
}

/** What a request rejects with: the relay's error code, or `offline` / `disconnected`. */
export class RowcastError extends Error {
  override readonly name = "RowcastError";
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}
