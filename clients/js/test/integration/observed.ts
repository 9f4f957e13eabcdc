/**
 * A `ws` WebSocket that records what crosses it, given to the client as
 * its `WebSocket`: the frames sent (to count joins per connection), the
 * frames received without their payload, and the close code. Tests read
 * the relay's side of the story from here rather than from the client.
 */

import WebSocket from "ws";

/** A received frame, without `data`/`old` (large frames are many). */
export interface Seen {
  type: string;
  ref?: string;
  ok?: boolean;
  room?: string;
  seq?: number;
  event?: string;
  gap?: boolean;
}

export interface ObservedSocket extends WebSocket {
  readonly sent: Array<{ type: string; room?: string; since?: number; ref?: string; token?: string }>;
  readonly seen: Seen[];
  readonly closeCode: number | undefined;
  readonly welcomed: boolean;
}

export function observedWebSocket() {
  const connections: ObservedSocket[] = [];

  class Observed extends WebSocket implements ObservedSocket {
    readonly sent: ObservedSocket["sent"] = [];
    readonly seen: Seen[] = [];
    closeCode: number | undefined;

    constructor(url: string) {
      super(url);
      connections.push(this);
      this.on("message", (data: Buffer) => {
        const { type, ref, ok, room, seq, event, gap } = JSON.parse(data.toString()) as Seen;
        this.seen.push({ type, ref, ok, room, seq, event, gap });
      });
      this.on("close", (code: number) => (this.closeCode = code));
    }

    get welcomed(): boolean {
      return this.seen[0]?.type === "welcome";
    }

    override send(data: string): void {
      this.sent.push(JSON.parse(data) as ObservedSocket["sent"][number]);
      super.send(data);
    }
  }

  return {
    WebSocket: Observed as unknown as new (url: string) => ObservedSocket,
    connections,
    get latest(): ObservedSocket {
      const socket = connections[connections.length - 1];
      if (!socket) throw new Error("no connection yet");
      return socket;
    },
    /** The `join` frames each connection sent for `room`. */
    joinsPerConnection(room: string): number[] {
      return connections.map((socket) => socket.sent.filter((frame) => frame.type === "join" && frame.room === room).length);
    },
    /** The reply to a connection's (by default the newest one's) join of `room`, once it came. */
    joinReply(room: string, socket = connections[connections.length - 1]): Seen | undefined {
      const join = socket?.sent.find((frame) => frame.type === "join" && frame.room === room);
      return join && socket?.seen.find((frame) => frame.type === "reply" && frame.ref === join.ref);
    },
    closeCodes(): Array<number | undefined> {
      return connections.map((socket) => socket.closeCode);
    },
  };
}
