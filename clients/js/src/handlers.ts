/**
 * Handlers by event name, for listening to an event wherever it comes from
 * rather than to one room. The same stored event reaches every joined room
 * it was sent to (say a document's room and its author's), always with one
 * seq; it reaches each handler once.
 */

import { callSafely } from "./listeners.js";
import type { EventFrame } from "./protocol.js";

/** An app's handler; `any` so it can declare the payload type it expects. */
export type Handler = (payload: any) => void;

/** How many recent seqs are remembered to drop a copy from a second room. */
const RECENT = 4096;

/** Seqs seen lately, oldest forgotten first. */
class RecentSeqs {
  private readonly seen = new Set<number>();
  private readonly order: number[] = [];

  /** Adds `seq`; `false` if it was already there. */
  add(seq: number): boolean {
    if (this.seen.has(seq)) return false;
    this.seen.add(seq);
    this.order.push(seq);
    if (this.order.length > RECENT) this.seen.delete(this.order.shift() as number);
    return true;
  }
}

export class EventHandlers {
  private readonly handlers = new Map<string, Set<Handler>>();
  private readonly recent = new RecentSeqs();

  /** Adds a handler for `name`; returns the function that removes it. */
  on(name: string, handler: Handler): () => void {
    let set = this.handlers.get(name);
    if (!set) this.handlers.set(name, (set = new Set()));
    set.add(handler);
    return () => this.off(name, handler);
  }

  off(name: string, handler: Handler): void {
    this.handlers.get(name)?.delete(handler);
  }

  /** Hands an event frame to the handlers of its name, a stored event only the first time its seq is seen. */
  dispatch(frame: EventFrame<unknown, string, unknown>): void {
    if (typeof frame.seq === "number" && !this.recent.add(frame.seq)) return;
    this.emit(frame.event, frame);
  }

  /** Removes every handler. */
  clear(): void {
    this.handlers.clear();
  }

  /** Hands `payload` to the handlers of `name`. */
  emit(name: string, payload: unknown): void {
    for (const handler of [...(this.handlers.get(name) ?? [])]) callSafely(handler, payload);
  }
}
