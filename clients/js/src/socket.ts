/**
 * One WebSocket connection to the relay: opening it with the token, parsing
 * frames, the heartbeat, and reporting its end exactly once. Reconnecting is
 * the client's job; a `Connection` never outlives its socket.
 */

import { Heartbeat } from "./heartbeat.js";
import { CloseCode, parseFrame, type ClientFrame, type ServerFrame, type Welcome } from "./protocol.js";

/**
 * The part of the WHATWG WebSocket that the client uses (browsers, Deno,
 * Bun, Node 22+, or `ws`). The handlers take `any` so that each
 * implementation's own event types fit.
 */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

const OPEN = 1;

/** How a connection ended. */
export interface Ended {
  code: number;
  reason: string;
  /** Whether the welcome had arrived: a connection refused at the upgrade never has one. */
  welcomed: boolean;
  /** Whether the client gave up waiting (for the welcome, or for any traffic): no close frame came. */
  timedOut: boolean;
  /** The HTTP status of a refused upgrade, when the WebSocket implementation tells (`ws` does, browsers do not). */
  httpStatus?: number;
  /**
   * Whether the implementation said what went wrong (`ws` gives a message
   * such as ECONNREFUSED or the HTTP status; browsers give nothing, so a
   * 401 looks like any other failed upgrade there).
   */
  explained: boolean;
}

export interface ConnectionHandlers {
  welcome(welcome: Welcome): void;
  frame(frame: ServerFrame): void;
  ended(ended: Ended): void;
}

export interface ConnectionOptions {
  /** Give up on an upgrade (or a welcome) that takes longer than this. */
  connectTimeoutMs: number;
}

/** Appends the token as the `token` query parameter, the one way browsers can send it. */
export function withToken(url: string, token: string): string {
  return `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
}

export class Connection {
  private readonly socket: WebSocketLike;
  private heartbeat: Heartbeat | undefined;
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  private welcomed = false;
  private done = false;
  private httpStatus: number | undefined;
  private explained = false;

  constructor(
    WebSocket: WebSocketConstructor,
    url: string,
    token: string,
    private readonly handlers: ConnectionHandlers,
    options: ConnectionOptions,
  ) {
    this.socket = new WebSocket(withToken(url, token));
    this.socket.onmessage = (event: { data: unknown }) => this.onMessage(event.data);
    this.socket.onerror = (event: unknown) => this.onError(event);
    this.socket.onclose = (event: { code: number; reason?: string }) => this.end(event.code, event.reason ?? "", false);
    this.connectTimer = setTimeout(() => this.abort("connect timeout"), options.connectTimeoutMs);
  }

  /** Whether frames can be sent. */
  get isOpen(): boolean {
    return !this.done && this.welcomed && this.socket.readyState === OPEN;
  }

  /** Sends one frame; `false` when the connection cannot send. */
  send(frame: ClientFrame): boolean {
    if (this.done || this.socket.readyState !== OPEN) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  /** Closes from this side (1000); the end is reported at once, not after the close handshake. */
  close(): void {
    if (this.done) return;
    this.detach(false);
    this.end(CloseCode.Normal, "closed by the client", false);
  }

  private onMessage(data: unknown): void {
    if (this.done) return;
    this.heartbeat?.heard();
    const frame = parseFrame(data);
    if (!frame) return;
    if (frame.type === "welcome" && !this.welcomed) return this.onWelcome(frame);
    this.handlers.frame(frame);
  }

  private onWelcome(welcome: Welcome): void {
    this.welcomed = true;
    clearTimeout(this.connectTimer);
    this.heartbeat = new Heartbeat(
      welcome.heartbeat_ms,
      () => this.send({ type: "ping" }),
      () => this.abort("heartbeat timeout"),
    );
    this.heartbeat.start();
    this.handlers.welcome(welcome);
  }

  /** `ws` reports a refused upgrade as an error "Unexpected server response: 401". */
  private onError(event: unknown): void {
    const message = (event as { message?: unknown } | null)?.message;
    if (typeof message !== "string" || message === "") return;
    this.explained = true;
    const status = /server response: (\d{3})/.exec(message);
    if (status) this.httpStatus = Number(status[1]);
  }

  /** Gives up on a socket that went silent: no close frame will come, so report 1006 now. */
  private abort(reason: string): void {
    if (this.done) return;
    this.detach(true);
    this.end(CloseCode.Abnormal, reason, true);
  }

  /**
   * Stops listening and closes the socket. The handlers become no-ops
   * rather than null: `ws` throws an error event that nobody listens to.
   * `terminate` (where the implementation has one) drops a dead socket
   * without waiting for a close handshake that will never finish.
   */
  private detach(dead: boolean): void {
    const socket = this.socket;
    const ignore = () => {};
    socket.onmessage = socket.onerror = socket.onclose = socket.onopen = ignore;
    const terminate = (socket as { terminate?: () => void }).terminate;
    try {
      if (dead && typeof terminate === "function") terminate.call(socket);
      else socket.close(CloseCode.Normal);
    } catch {
      // Already closing: nothing left to do.
    }
  }

  private end(code: number, reason: string, timedOut: boolean): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.connectTimer);
    this.heartbeat?.stop();
    const ended: Ended = { code, reason, welcomed: this.welcomed, timedOut, explained: this.explained };
    if (this.httpStatus !== undefined) ended.httpStatus = this.httpStatus;
    this.handlers.ended(ended);
  }
}
