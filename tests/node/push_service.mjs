// A Web Push service stand-in (RFC 8030) on loopback, for the tests of the
// relay's Web Push deliveries. It hands out browser-like subscriptions
// (a P-256 key pair and an auth secret that it keeps, RFC 8291), and checks
// every push the relay sends the way a user agent and a push service would:
// the aes128gcm content coding (RFC 8188) decrypted with `http_ece` (the
// implementation the `web-push` package uses), a TTL, and a VAPID
// authorization (RFC 8292) whose ES256 JWT verifies and whose claims are
// right. Tests script the answers (503 with Retry-After, 410 Gone, ...) and
// read back what arrived.
//
// Started as `node push_service.mjs`; listens on 127.0.0.1, port 0, and
// prints one line `{"port":N}`. When its stdin is a pipe (or a socket), it
// exits once that closes (its parent, the test, is gone).
//
// API:
//   POST /new-subscription  -> {"endpoint":"http://127.0.0.1:N/push/<id>",
//                               "keys":{"p256dh":B64URL,"auth":B64URL}}
//   POST /push/<id>         what the relay calls: 400 {"error":..} when a check
//                           fails (recorded in /failures), else the next
//                           scripted answer, else 201
//   POST /script/<id>       [{"status":503,"retryAfter":"1"}, 503, 410, ...]
//                           replaces the queue of answers; a 404 or 410 stays
//                           the answer from then on (the subscription is gone)
//   GET /attempts/<id>      every push to <id>: {status, ttl, urgency, topic,
//                           headers, payload (decrypted text or null), at}
//   GET /failures           every failed check: {id, reason, status, headers, at}

import { createECDH, createPublicKey, randomBytes, verify } from "node:crypto";
import { createServer } from "node:http";

import ece from "http_ece";

import { exitWithParent, readBody, send } from "./peer.mjs";

/** The most a push message body may be (RFC 8030 section 7.2, RFC 8291 section 4). */
const MAX_BODY = 4096;
/** How far ahead a VAPID JWT may expire (RFC 8292 section 2). */
const MAX_EXP_AHEAD_S = 24 * 60 * 60;
/** The Urgency values of RFC 8030 section 5.3. */
const URGENCIES = ["very-low", "low", "normal", "high"];

/** Subscriptions by id: {ecdh, auth, script: [{status, retryAfter}], attempts: [...]}. */
const subscriptions = new Map();
/** Every failed check, in order. */
const failures = [];
let origin = "";
let nextId = 1;
let nextMessage = 1;

const b64url = (buffer) => Buffer.from(buffer).toString("base64url");

function parseJson(buffer) {
  try {
    return { value: JSON.parse(buffer.toString("utf8")) };
  } catch (error) {
    return { error: `not JSON: ${error.message}` };
  }
}

/** A fresh subscription as a browser's PushManager.subscribe() would give it. */
function newSubscription() {
  const id = `s${nextId++}-${randomBytes(6).toString("hex")}`;
  const ecdh = createECDH("prime256v1");
  ecdh.generateKeys();
  const auth = randomBytes(16);
  subscriptions.set(id, { ecdh, auth, script: [], attempts: [] });
  return {
    endpoint: `${origin}/push/${id}`,
    keys: { p256dh: b64url(ecdh.getPublicKey()), auth: b64url(auth) },
  };
}

/** A Failure carries the status the push is answered with (400 unless said). */
class Failure extends Error {
  constructor(reason, status = 400) {
    super(reason);
    this.status = status;
  }
}

/** Decodes base64url strictly: a Failure when `text` is not base64url. */
function strictB64url(text, what) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text)) {
    throw new Failure(`${what} is not base64url (without padding)`);
  }
  return Buffer.from(text, "base64url");
}

/** Parses `Authorization: vapid t=<jwt>, k=<key>` (RFC 8292 section 3). */
function vapidAuthorization(header) {
  if (!header) throw new Failure("no Authorization header");
  const match = /^vapid\s+(.*)$/is.exec(header.trim());
  if (!match) throw new Failure(`Authorization is not of the vapid scheme: ${header}`);
  const params = {};
  for (const part of match[1].split(",")) {
    const eq = part.indexOf("=");
    if (eq < 0) throw new Failure(`malformed vapid parameter: ${part.trim()}`);
    params[part.slice(0, eq).trim().toLowerCase()] = part.slice(eq + 1).trim();
  }
  if (!params.t) throw new Failure("vapid Authorization has no t= (JWT)");
  if (!params.k) throw new Failure("vapid Authorization has no k= (public key)");
  return { jwt: params.t, key: params.k };
}

/** Checks the VAPID JWT against the `k` key and this service's origin. */
function checkVapid(jwt, k) {
  const point = strictB64url(k, "vapid k");
  if (point.length !== 65 || point[0] !== 4) {
    throw new Failure(`vapid k is not an uncompressed P-256 point (${point.length} bytes)`);
  }
  let key;
  try {
    key = createPublicKey({
      key: { kty: "EC", crv: "P-256", x: b64url(point.subarray(1, 33)), y: b64url(point.subarray(33)) },
      format: "jwk",
    });
  } catch (error) {
    throw new Failure(`vapid k is not a P-256 public key: ${error.message}`);
  }
  const parts = jwt.split(".");
  if (parts.length !== 3) throw new Failure("the vapid JWT does not have three parts");
  const [headerPart, claimsPart, signaturePart] = parts;
  let header;
  let claims;
  try {
    header = JSON.parse(strictB64url(headerPart, "JWT header").toString("utf8"));
    claims = JSON.parse(strictB64url(claimsPart, "JWT claims").toString("utf8"));
  } catch (error) {
    if (error instanceof Failure) throw error;
    throw new Failure(`the vapid JWT's header or claims are not JSON: ${error.message}`);
  }
  if (header?.alg !== "ES256") throw new Failure(`the vapid JWT's alg is ${header?.alg}, not ES256`);
  if (header.typ !== undefined && header.typ !== "JWT") throw new Failure(`the vapid JWT's typ is ${header.typ}`);
  const signature = strictB64url(signaturePart, "JWT signature");
  if (signature.length !== 64) throw new Failure(`the vapid JWT's signature is ${signature.length} bytes, not 64`);
  const signed = Buffer.from(`${headerPart}.${claimsPart}`, "ascii");
  if (!verify("sha256", signed, { key, dsaEncoding: "ieee-p1363" }, signature)) {
    throw new Failure("the vapid JWT's signature does not verify with k");
  }
  if (claims?.aud !== origin) throw new Failure(`the vapid JWT's aud is ${JSON.stringify(claims?.aud)}, not ${origin}`);
  const now = Math.floor(Date.now() / 1000);
  if (!Number.isInteger(claims.exp)) throw new Failure(`the vapid JWT's exp is not an integer: ${JSON.stringify(claims.exp)}`);
  if (claims.exp <= now) throw new Failure(`the vapid JWT expired (exp ${claims.exp}, now ${now})`);
  if (claims.exp > now + MAX_EXP_AHEAD_S) {
    throw new Failure(`the vapid JWT's exp is more than 24 h ahead (exp ${claims.exp}, now ${now})`);
  }
  if (typeof claims.sub !== "string" || !(claims.sub.startsWith("mailto:") || claims.sub.startsWith("https:"))) {
    throw new Failure(`the vapid JWT's sub is not a mailto: or https: URL: ${JSON.stringify(claims.sub)}`);
  }
}

/** Decrypts an aes128gcm body for the subscription (RFC 8291 section 4). */
function decrypt(body, subscription) {
  if (body.length < 21) throw new Failure(`the body (${body.length} bytes) is shorter than an aes128gcm header`);
  if (body.length > MAX_BODY) throw new Failure(`the body is ${body.length} bytes, more than ${MAX_BODY}`, 413);
  const rs = body.readUInt32BE(16);
  const idlen = body[20];
  if (idlen !== 65) throw new Failure(`the aes128gcm keyid is ${idlen} bytes, not the 65-byte sender key`);
  if (body.length - 21 - idlen > rs) throw new Failure(`the body has more than one record (rs ${rs})`);
  try {
    return ece
      .decrypt(body, { version: "aes128gcm", privateKey: subscription.ecdh, authSecret: b64url(subscription.auth) })
      .toString("utf8");
  } catch (error) {
    throw new Failure(`the body does not decrypt: ${error.message}`);
  }
}

/** Checks a push in order; returns {ttl, urgency, payload}, or throws a Failure. */
function check(req, body, subscription) {
  const encoding = req.headers["content-encoding"];
  if (encoding !== "aes128gcm") throw new Failure(`Content-Encoding is ${JSON.stringify(encoding)}, not aes128gcm`);
  const ttlHeader = req.headers.ttl;
  if (ttlHeader === undefined) throw new Failure("no TTL header");
  if (!/^\d+$/.test(ttlHeader.trim())) throw new Failure(`TTL is not a non-negative integer: ${ttlHeader}`);
  const urgency = req.headers.urgency ?? null;
  if (urgency !== null && !URGENCIES.includes(urgency)) throw new Failure(`Urgency is not one of RFC 8030's: ${urgency}`);
  const { jwt, key } = vapidAuthorization(req.headers.authorization);
  checkVapid(jwt, key);
  return { ttl: Number(ttlHeader.trim()), urgency, payload: decrypt(body, subscription) };
}

async function push(req, res, id) {
  const body = await readBody(req);
  const subscription = subscriptions.get(id);
  const at = Date.now();
  const ttlHeader = req.headers.ttl;
  const attempt = {
    status: 0,
    ttl: ttlHeader !== undefined && /^\d+$/.test(ttlHeader.trim()) ? Number(ttlHeader.trim()) : null,
    urgency: req.headers.urgency ?? null,
    topic: req.headers.topic ?? null,
    headers: req.headers,
    payload: null,
    at,
  };
  if (!subscription) {
    failures.push({ id, reason: "no such subscription", status: 404, headers: req.headers, at });
    return send(res, 404, { error: "no such subscription" });
  }
  subscription.attempts.push(attempt);
  let checked;
  try {
    checked = check(req, body, subscription);
  } catch (error) {
    const status = error instanceof Failure ? error.status : 500;
    const reason = error instanceof Failure ? error.message : `stand-in error: ${error?.stack ?? error}`;
    attempt.status = status;
    failures.push({ id, reason, status, headers: req.headers, at });
    return send(res, status, { error: reason });
  }
  attempt.payload = checked.payload;
  const next = subscription.script[0];
  if (next) {
    // A gone subscription stays gone.
    if (next.status !== 404 && next.status !== 410) subscription.script.shift();
    attempt.status = next.status;
    const headers = next.retryAfter !== undefined ? { "retry-after": String(next.retryAfter) } : {};
    return send(res, next.status, { scripted: next.status }, headers);
  }
  attempt.status = 201;
  return send(res, 201, undefined, { location: `${origin}/message/${nextMessage++}`, ttl: String(checked.ttl) });
}

/** Parses a script: a bare status, or {status, retryAfter}. */
function parseScript(value) {
  if (!Array.isArray(value)) return { error: "a script is a JSON array" };
  const script = [];
  for (const entry of value) {
    const step = typeof entry === "number" ? { status: entry } : entry;
    if (!step || !Number.isInteger(step.status) || step.status < 100 || step.status > 599) {
      return { error: `not a script entry: ${JSON.stringify(entry)}` };
    }
    script.push(step.retryAfter === undefined ? { status: step.status } : { status: step.status, retryAfter: step.retryAfter });
  }
  return { script };
}

async function handle(req, res) {
  const path = new URL(req.url, origin).pathname;
  const [, first, id, ...rest] = path.split("/");
  const method = req.method;
  if (method === "POST" && path === "/new-subscription") {
    await readBody(req);
    return send(res, 200, newSubscription());
  }
  if (method === "GET" && path === "/failures") return send(res, 200, failures);
  if (id === undefined || rest.length > 0) return send(res, 404, { error: `no route ${method} ${path}` });
  if (method === "POST" && first === "push") return push(req, res, id);
  const subscription = subscriptions.get(id);
  if (method === "POST" && first === "script") {
    const parsed = parseJson(await readBody(req));
    if (!subscription) return send(res, 404, { error: "no such subscription" });
    const { script, error } = parsed.error ? parsed : parseScript(parsed.value);
    if (error) return send(res, 400, { error });
    subscription.script = script;
    return send(res, 200, { script });
  }
  if (method === "GET" && first === "attempts") {
    if (!subscription) return send(res, 404, { error: "no such subscription" });
    return send(res, 200, subscription.attempts);
  }
  return send(res, 404, { error: `no route ${method} ${path}` });
}

const server = createServer((req, res) => {
  handle(req, res).catch((error) => {
    if (!res.headersSent) send(res, 500, { error: String(error?.stack ?? error) });
    else res.destroy();
  });
});

server.listen(0, "127.0.0.1", () => {
  const { port } = server.address();
  origin = `http://127.0.0.1:${port}`;
  process.stdout.write(JSON.stringify({ port }) + "\n");
});

exitWithParent();
