// One client for rowcast's integration tests, driven over stdin and stdout
// with one JSON object per line, so that the tests (in Rust) use unchanged
// third-party clients: `socket.io-client` as an app would, and a browser's
// own `EventSource` in Chromium.
//
// Commands (stdin):
//   {"op":"sio","url":U,"token":T,"transports":[..]}  connect a Socket.IO client
//   {"op":"emit","id":N,"event":E,"data":D,"ack":true} emit (with an ack callback when asked)
//   {"op":"disconnect"}                                 close the Socket.IO client
//   {"op":"eventsource","origin":O,"url":U}             open an EventSource in Chromium on page O
// Reports (stdout):
//   {"type":"connect"} {"type":"connect_error","message":M} {"type":"disconnect","reason":R}
//   {"type":"upgrade","transport":T} {"type":"event","name":E,"args":[..]} {"type":"ack","id":N,"reply":R}
//   {"type":"sse","event":E,"id":I,"data":D} {"type":"sse_open"} {"type":"sse_error","readyState":S}

import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

import { io } from "socket.io-client";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

const report = (message) => process.stdout.write(JSON.stringify(message) + "\n");

let socket = null;
let browser = null;

async function handle(command) {
  switch (command.op) {
    case "sio": {
      socket = io(command.url, {
        auth: { token: command.token },
        transports: command.transports ?? ["websocket"],
        reconnectionDelay: 100,
        reconnectionDelayMax: 500,
      });
      socket.on("connect", () => report({ type: "connect", transport: socket.io.engine.transport.name }));
      socket.io.on("open", () =>
        socket.io.engine.on("upgrade", (transport) => report({ type: "upgrade", transport: transport.name })),
      );
      socket.on("connect_error", (error) => report({ type: "connect_error", message: error.message }));
      socket.on("disconnect", (reason) => report({ type: "disconnect", reason }));
      socket.onAny((name, ...args) => report({ type: "event", name, args }));
      break;
    }
    case "emit": {
      if (command.ack) {
        socket.emit(command.event, command.data, (reply) => report({ type: "ack", id: command.id, reply }));
      } else {
        socket.emit(command.event, command.data);
      }
      break;
    }
    case "disconnect":
      socket?.disconnect();
      break;
    case "eventsource":
      await openEventSource(command.origin, command.url);
      break;
    default:
      report({ type: "bad_command", command });
  }
}

function ensureChromium() {
  if (existsSync(CHROMIUM)) return;
  if (process.getuid?.() !== 0) throw new Error(`${CHROMIUM} is missing; install it with: apt-get install -y chromium`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  for (const args of [["update"], ["install", "-y", "chromium"]]) {
    const result = spawnSync("apt-get", args, { stdio: ["ignore", "ignore", "inherit"], env });
    if (result.status !== 0) throw new Error(`apt-get ${args.join(" ")} failed`);
  }
}

// The page records what its EventSource sees; this process reports it.
async function openEventSource(origin, url) {
  ensureChromium();
  const { chromium } = await import("playwright-core");
  const profile = mkdtempSync(join(tmpdir(), "rowcast-sse-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 60_000,
  });
  browser = { context, profile };
  const page = context.pages()[0] ?? (await context.newPage());
  await page.exposeFunction("rowcastReport", (message) => report(message));
  await page.goto(origin);
  await page.evaluate((source) => {
    const events = new EventSource(source);
    events.onopen = () => window.rowcastReport({ type: "sse_open" });
    events.onerror = () => window.rowcastReport({ type: "sse_error", readyState: events.readyState });
    const forward = (message) =>
      window.rowcastReport({ type: "sse", event: message.type, id: message.lastEventId, data: message.data });
    for (const name of ["content-created", "content-updated", "gap", "error", "left"]) {
      events.addEventListener(name, forward);
    }
  }, url);
}

async function shutdown() {
  socket?.disconnect();
  if (browser) {
    await browser.context.close().catch(() => {});
    rmSync(browser.profile, { recursive: true, force: true });
  }
  process.exit(0);
}

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (!line.trim()) return;
  handle(JSON.parse(line)).catch((error) => report({ type: "failed", message: String(error?.stack ?? error) }));
});
lines.on("close", shutdown);
process.on("SIGTERM", shutdown);
