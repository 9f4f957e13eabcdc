// A minimal stand-in for the Node.js Socket.IO server that rowcast replaces,
// for comparing the two on one machine (`rowcast-bench latency --path seed`).
//
// The database's triggers (`triggers.sql`) call `pg_notify('row_changes',
// ...)` with the changed row; this process LISTENs on one node-postgres
// connection and emits each change to its Socket.IO rooms:
//
// - `content` insert / update: `content-created` / `content-updated` to
//   `content_{id}`;
// - `messages` insert: `message-sent` to `user_{sender_id}` and
//   `message-received` to `user_{recipient_id}`.
//
// The argument of each event is the row as `row_to_json` made it (every
// column). Clients connect with `auth: { token }` (an HS256 JWT checked by an
// `io.use` middleware) and join with `join-content`, `join-user`, ... and the
// id (`leave-...` likewise).
// A join is acknowledged when the client passes a callback (the bench does,
// to know when its sockets are in their rooms).
//
// What it does not do, by design of the original: nothing is stored (a client
// that is disconnected misses what happens meanwhile, and cannot resume), a
// change is lost when this process is not listening at the commit, a NOTIFY
// payload over 8000 bytes fails the writer's transaction, every column of
// the row leaves the database, and joins are not authorized per room.
//
// Environment: PORT, DATABASE_URL, JWT_SECRET. Prints `listening <port>` on
// stdout once it is listening and LISTENing.

"use strict";

const { Server } = require("socket.io");
const { Client } = require("pg");
const jwt = require("jsonwebtoken");

const port = Number(process.env.PORT || 3001);
const secret = process.env.JWT_SECRET;
const databaseUrl = process.env.DATABASE_URL;
if (!secret || !databaseUrl) {
  process.stderr.write("seed: JWT_SECRET and DATABASE_URL are required\n");
  process.exit(2);
}

const io = new Server({ cors: { origin: "*" } });

io.use((socket, next) => {
  const token = socket.handshake.auth && socket.handshake.auth.token;
  try {
    socket.data.user = jwt.verify(token, secret, { algorithms: ["HS256"] });
    next();
  } catch (e) {
    next(new Error("unauthorized"));
  }
});

io.on("connection", (socket) => {
  for (const kind of ["content", "calendar", "media", "album", "diary", "user"]) {
    socket.on(`join-${kind}`, (id, ack) => {
      socket.join(`${kind}_${id}`);
      if (typeof ack === "function") ack({ ok: true });
    });
    socket.on(`leave-${kind}`, (id) => socket.leave(`${kind}_${id}`));
  }
});

function route(change) {
  const row = change.row;
  switch (change.table) {
    case "content":
      io.to(`content_${row.id}`).emit(change.op === "INSERT" ? "content-created" : "content-updated", row);
      break;
    case "messages":
      io.to(`user_${row.sender_id}`).emit("message-sent", row);
      io.to(`user_${row.recipient_id}`).emit("message-received", row);
      break;
    default:
      break;
  }
}

async function main() {
  const db = new Client({ connectionString: databaseUrl });
  db.on("error", (e) => {
    process.stderr.write(`seed: database connection lost: ${e.message}\n`);
    process.exit(1);
  });
  db.on("notification", (message) => {
    try {
      route(JSON.parse(message.payload));
    } catch (e) {
      process.stderr.write(`seed: bad notification: ${e.message}\n`);
    }
  });
  await db.connect();
  await db.query("LISTEN row_changes");
  io.listen(port);
  process.stdout.write(`listening ${port}\n`);
  const stop = () => {
    io.close();
    db.end().finally(() => process.exit(0));
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((e) => {
  process.stderr.write(`seed: error: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
