/**
 * A fake relay for unit tests: a WebSocket class whose instances the test
 * drives (open with a welcome, push frames, close with a code, refuse the
 * upgrade) and whose sent frames it reads.
 */

import type { WebSocketLike } from "../../src/socket.js";

export interface SentFrame {
  type: string;
  ref?: string;
  room?: string;
  since?: number;
  [field: string]: unknown;
}

export class FakeSocket implements WebSocketLike {
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  readonly sent: SentFrame[] = [];
  /** The code the client closed with, if it did. */
  closedWith: number | undefined;
  terminated = false;
  /** Whether the fake relay answers `ping` with `pong`, as the real one does. */
  answersPings = true;
  /** `Date.now()` at creation (fake timers make it the test's clock). */
  readonly createdAt = Date.now();

  constructor(readonly url: string) {}

  get token(): string | null {
    return new URL(this.url).searchParams.get("token");
  }

  send(data: string): void {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    const frame = JSON.parse(data) as SentFrame;
    this.sent.push(frame);
    if (frame.type === "ping" && this.answersPings) queueMicrotask(() => this.push({ type: "pong", ref: frame.ref }));
  }

  close(code?: number): void {
    this.closedWith = code ?? 1005;
    this.readyState = 3;
  }

  terminate(): void {
    this.terminated = true;
    this.readyState = 3;
  }

  // ---- driven by the test ----

  /** The upgrade succeeds and the relay says welcome. */
  open(welcome: { head?: number; heartbeat_ms?: number } = {}): void {
    this.readyState = 1;
    this.onopen?.({});
    this.push({ type: "welcome", conn: "c1", user: "1", head: welcome.head ?? 0, heartbeat_ms: welcome.heartbeat_ms ?? 25_000 });
  }

  push(frame: object): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  /** Answers the last sent frame of `type` (and room) with an ok reply. */
  reply(type: string, fields: object = {}, room?: string): void {
    const request = this.last(type, room);
    this.push({ type: "reply", ref: request.ref, ok: true, ...fields });
  }

  /** Answers the last sent frame of `type` with an error reply. */
  refuse(type: string, code: string, room?: string): void {
    const request = this.last(type, room);
    this.push({ type: "reply", ref: request.ref, ok: false, error: { code, message: code } });
  }

  /** The relay closes the connection. */
  serverClose(code: number, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  /** The upgrade is refused with an HTTP status, the way `ws` reports it (`withStatus: false`: the way browsers do). */
  refuseUpgrade(status: number, withStatus = true): void {
    this.readyState = 3;
    this.onerror?.(withStatus ? { message: `Unexpected server response: ${status}` } : {});
    this.onclose?.({ code: 1006, reason: "" });
  }

  /** The connection fails before the upgrade, the way `ws` reports it (browsers give no message). */
  failNetwork(message = "connect ECONNREFUSED 127.0.0.1:3001"): void {
    this.readyState = 3;
    this.onerror?.({ message });
    this.onclose?.({ code: 1006, reason: "" });
  }

  sentOf(type: string): SentFrame[] {
    return this.sent.filter((frame) => frame.type === type);
  }

  last(type: string, room?: string): SentFrame {
    const frames = this.sentOf(type).filter((frame) => room === undefined || frame.room === room);
    const frame = frames[frames.length - 1];
    if (!frame) throw new Error(`no ${type} frame was sent`);
    return frame;
  }
}

/** A WebSocket class that records its instances. */
export function fakeWebSocket() {
  const sockets: FakeSocket[] = [];
  class Recorded extends FakeSocket {
    constructor(url: string) {
      super(url);
      sockets.push(this);
    }
  }
  return {
    WebSocket: Recorded,
    sockets,
    /** The newest socket. */
    get latest(): FakeSocket {
      const socket = sockets[sockets.length - 1];
      if (!socket) throw new Error("no socket was created");
      return socket;
    },
  };
}

/** Lets pending promise callbacks run (token functions, replies). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}
