// A Standard Webhooks receiver on loopback, for the tests of the relay's
// webhook deliveries: every hook is checked with the `standardwebhooks`
// package's own `Webhook.verify` (the webhook-id, webhook-timestamp and
// webhook-signature headers, HMAC-SHA256 over `id.timestamp.body`, and a
// timestamp within 5 minutes), as a consumer's endpoint would. Tests can make
// it fail for a while and read back what arrived.
//
// Started as `node webhook_receiver.mjs whsec_<base64>`; listens on
// 127.0.0.1, port 0, and prints one line `{"port":N}`. When its stdin is a
// pipe (or a socket), it exits once that closes (its parent, the test, is
// gone).
//
// API:
//   POST /hook      what the relay calls: the mode's failure status when it
//                   says fail; else 401 when verification fails (recorded in
//                   /failures), else 204 (recorded in /received)
//   POST /mode      {"status":500} answer that to every hook from now on
//                   (with "retryAfter":"2", also that Retry-After header);
//                   {"status":null} accept again; {"downForMs":5000} answer
//                   503 until that many ms from now, then accept
//   GET /received   verified hooks: {id, timestamp, body (parsed JSON), at}
//   GET /attempts   every hook: {id, timestamp, status, accepted, at}
//   GET /failures   failed verifications: {id, reason, headers, body (text), at}

import { createServer } from "node:http";

import { Webhook } from "standardwebhooks";

import { exitWithParent, readBody, send } from "./peer.mjs";

const secret = process.argv[2];
if (!secret || !secret.startsWith("whsec_")) {
  process.stderr.write("usage: node webhook_receiver.mjs whsec_<base64 secret>\n");
  process.exit(2);
}
const webhook = new Webhook(secret);

/** Verified hooks, in order. */
const received = [];
/** Every hook, in order. */
const attempts = [];
/** Failed verifications, in order. */
const failures = [];
/** How hooks are answered: null (verify) or {status, retryAfter, until}. */
let mode = null;

/** The status the mode answers a hook with now, or null to verify it. */
function failing() {
  if (!mode) return null;
  if (mode.until !== undefined && Date.now() >= mode.until) {
    mode = null;
    return null;
  }
  return mode;
}

async function hook(req, res) {
  const body = (await readBody(req)).toString("utf8");
  const at = Date.now();
  const id = req.headers["webhook-id"] ?? null;
  const timestamp = req.headers["webhook-timestamp"] ?? null;
  const fail = failing();
  if (fail) {
    attempts.push({ id, timestamp, status: fail.status, accepted: false, at });
    const headers = fail.retryAfter !== undefined ? { "retry-after": String(fail.retryAfter) } : {};
    return send(res, fail.status, { error: "the receiver is set to fail" }, headers);
  }
  let parsed;
  try {
    parsed = webhook.verify(body, req.headers);
  } catch (error) {
    attempts.push({ id, timestamp, status: 401, accepted: false, at });
    failures.push({ id, reason: String(error?.message ?? error), headers: req.headers, body, at });
    return send(res, 401, { error: String(error?.message ?? error) });
  }
  attempts.push({ id, timestamp, status: 204, accepted: true, at });
  received.push({ id, timestamp, body: parsed ?? null, at });
  return send(res, 204);
}

function setMode(value) {
  if (value && Object.hasOwn(value, "downForMs")) {
    if (!Number.isFinite(value.downForMs) || value.downForMs < 0) return "downForMs is a non-negative number";
    mode = { status: 503, until: Date.now() + value.downForMs, retryAfter: value.retryAfter };
    return null;
  }
  if (value && Object.hasOwn(value, "status")) {
    if (value.status === null) {
      mode = null;
      return null;
    }
    if (!Number.isInteger(value.status) || value.status < 100 || value.status > 599) return "status is an HTTP status or null";
    mode = { status: value.status, retryAfter: value.retryAfter };
    return null;
  }
  return 'a mode is {"status":N}, {"status":null} or {"downForMs":N}';
}

async function handle(req, res) {
  const path = new URL(req.url, "http://127.0.0.1").pathname;
  const route = `${req.method} ${path}`;
  switch (route) {
    case "POST /hook":
      return hook(req, res);
    case "POST /mode": {
      let value;
      try {
        value = JSON.parse((await readBody(req)).toString("utf8"));
      } catch (error) {
        return send(res, 400, { error: `not JSON: ${error.message}` });
      }
      const error = setMode(value);
      return error ? send(res, 400, { error }) : send(res, 200, { mode });
    }
    case "GET /received":
      return send(res, 200, received);
    case "GET /attempts":
      return send(res, 200, attempts);
    case "GET /failures":
      return send(res, 200, failures);
    default:
      return send(res, 404, { error: `no route ${route}` });
  }
}

const server = createServer((req, res) => {
  handle(req, res).catch((error) => {
    if (!res.headersSent) send(res, 500, { error: String(error?.stack ?? error) });
    else res.destroy();
  });
});

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
});

exitWithParent();
