/**
 * Requests awaiting their reply, matched by `ref`. Replies on one
 * connection are matched only to requests sent on it: when it ends, every
 * request still waiting rejects with `disconnected` (nothing is resent).
 */

import { RowcastError, type ClientFrame, type OkReply, type Reply } from "./protocol.js";

interface Waiting {
  resolve(reply: OkReply): void;
  reject(error: RowcastError): void;
}

export class Requests {
  private nextRef = 1;
  private readonly waiting = new Map<string, Waiting>();

  /**
   * Sends `frame` with a fresh `ref` through `send` (which returns `false`
   * when the connection cannot send); resolves with the ok reply, rejects
   * with the relay's error code, or with `offline` when nothing was sent.
   */
  request(frame: ClientFrame, send: (frame: ClientFrame) => boolean): Promise<OkReply> {
    const ref = `r${this.nextRef++}`;
    return new Promise((resolve, reject) => {
      this.waiting.set(ref, { resolve, reject });
      if (!send({ ...frame, ref })) {
        this.waiting.delete(ref);
        reject(new RowcastError("offline", "not connected"));
      }
    });
  }

  /** Settles the request a reply answers; `false` for a reply nobody waits for. */
  settle(reply: Reply): boolean {
    const waiting = reply.ref === undefined ? undefined : this.waiting.get(reply.ref);
    if (!waiting || reply.ref === undefined) return false;
    this.waiting.delete(reply.ref);
    if (reply.ok) waiting.resolve(reply);
    else waiting.reject(new RowcastError(reply.error.code, reply.error.message));
    return true;
  }

  /** Rejects every request still waiting (the connection ended). */
  failAll(): void {
    const waiting = [...this.waiting.values()];
    this.waiting.clear();
    for (const request of waiting) {
      request.reject(new RowcastError("disconnected", "the connection ended before the reply"));
    }
  }
}
