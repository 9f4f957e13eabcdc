// rowcast-bench's Socket.IO load client: one Node process holding many
// socket.io-client sockets, speaking the same line protocol on stdin/stdout
// as the bench's own client processes (`rowcast-bench clients`):
//
// - stdin, first line: the plan (JSON): `addr`, `token`, `bind`, `conns`
//   (the rooms of each connection), `latency`, `transport`;
// - stdout: `{"type":"ready",...}` once every socket connected and joined;
// - stdin `report`: `{"type":"report",...}` with the events counted since
//   the previous report and, when the plan records latency, `[n, t]` per
//   event of a `messages` row: its `body` (the writer's sequence number)
//   and the CLOCK_MONOTONIC time it arrived, in ns (`process.hrtime`
//   reads that clock on Linux, as the writers do);
// - stdin `exit`: ends the process.
//
// Transports:
// - `socketio`: the relay's Socket.IO endpoint. `join` `{room}` with an
//   acknowledgement (`{ok:true, room, head, replayed}`); each stored event
//   arrives as an event named after it, its argument the protocol's event
//   frame (`seq`, `room`, `event`, `data`, `at`).
// - `seed`: the Node.js Socket.IO server in `bench/seed/`. `join-user` /
//   `join-content` with the id; each event's argument is the row itself.

"use strict";

const readline = require("node:readline");
const { io } = require("socket.io-client");

const CONNECT_TIMEOUT_MS = 20000;

const counters = {
  frames: 0,
  samples: [],
  closes: new Map(),
  open: 0,
};

function say(message) {
  process.stdout.write(message + "\n");
}

function now() {
  return process.hrtime.bigint();
}

// The writer's sequence number carried in a `messages` row's `body`.
function bodyNumber(payload) {
  if (payload === null || typeof payload !== "object") return undefined;
  const row = payload.data !== undefined && payload.seq !== undefined ? payload.data : payload;
  if (row === null || typeof row !== "object" || typeof row.body !== "string") return undefined;
  return /^\d+$/.test(row.body) ? row.body : undefined;
}

// How a room is joined on each server.
function join(socket, transport, room) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer to the join of ${room}`)), CONNECT_TIMEOUT_MS);
    const done = (reply) => {
      clearTimeout(timer);
      if (reply && reply.ok === true) resolve();
      else reject(new Error(`join of ${room} refused: ${JSON.stringify(reply)}`));
    };
    if (transport === "seed") {
      const at = room.lastIndexOf("_");
      socket.emit(`join-${room.slice(0, at)}`, room.slice(at + 1), done);
    } else {
      socket.emit("join", { room }, done);
    }
  });
}

function connect(plan, rooms) {
  return new Promise((resolve, reject) => {
    const socket = io(`http://${plan.addr}`, {
      auth: { token: plan.token },
      transports: ["websocket"],
      localAddress: plan.bind,
      reconnection: false,
      forceNew: true,
      timeout: CONNECT_TIMEOUT_MS,
    });
    let opened = false;
    socket.on("connect", async () => {
      opened = true;
      counters.open += 1;
      try {
        for (const room of rooms) await join(socket, plan.transport, room);
        resolve(socket);
      } catch (e) {
        reject(e);
      }
    });
    socket.on("connect_error", (e) => {
      if (!opened) reject(e);
    });
    socket.on("disconnect", (reason) => {
      if (!opened) return;
      counters.open -= 1;
      const code = reason === "io server disconnect" ? 1000 : 1006;
      counters.closes.set(code, (counters.closes.get(code) || 0) + 1);
    });
    socket.onAny((_event, payload) => {
      const at = now();
      // Stored events only: the relay's carry a seq; the seed sends rows.
      if (plan.transport !== "seed" && (payload === null || typeof payload !== "object" || payload.seq === undefined)) return;
      counters.frames += 1;
      if (!plan.latency) return;
      const n = bodyNumber(payload);
      if (n !== undefined) counters.samples.push(`[${n},${at}]`);
    });
  });
}

async function main() {
  const lines = readline.createInterface({ input: process.stdin });
  const input = lines[Symbol.asyncIterator]();
  const first = await input.next();
  if (first.done) throw new Error("no plan on stdin");
  const plan = JSON.parse(first.value);
  const started = Date.now();
  const results = await Promise.allSettled(plan.conns.map((rooms) => connect(plan, rooms)));
  const failed = results.filter((r) => r.status === "rejected");
  say(
    JSON.stringify({
      type: "ready",
      connected: results.length - failed.length,
      failed: failed.length,
      elapsed_ms: Date.now() - started,
      first_error: failed.length > 0 ? String(failed[0].reason && failed[0].reason.message) : null,
    }),
  );
  for (;;) {
    const next = await input.next();
    if (next.done) break;
    const command = next.value.trim();
    if (command === "report") {
      const samples = counters.samples;
      counters.samples = [];
      const closes = [...counters.closes.entries()].map(([code, n]) => `[${code},${n}]`);
      counters.closes.clear();
      say(
        `{"type":"report","at_ns":${now()},"frames":${counters.frames},"samples":[${samples.join(",")}],` +
          `"closes":[${closes.join(",")}],"reconnects":0,"open":${counters.open},"lefts":[]}`,
      );
      counters.frames = 0;
    } else if (command === "exit") {
      break;
    }
  }
  process.stdout.write("", () => process.exit(0));
}

main().catch((e) => {
  process.stderr.write(`node client: error: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
