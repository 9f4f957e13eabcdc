// What every peer process here shares: JSON answers, reading a request's
// body, and a lifetime tied to the test that started it.

import { fstatSync } from "node:fs";

/** Answers `status` with `body` as JSON (no body when it is undefined). */
export function send(res, status, body, headers = {}) {
  const text = body === undefined ? "" : JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    ...(text ? { "content-type": "application/json" } : {}),
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

/** A request's whole body. */
export function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

/**
 * Exits once stdin closes when it is a pipe or a socket (Rust's piped stdin
 * is a pipe, Node's child_process one a socket): the test that started the
 * peer is gone. Also exits on SIGTERM.
 */
export function exitWithParent() {
  const stdin = fstatSync(0);
  if (stdin.isFIFO() || stdin.isSocket()) {
    process.stdin.on("end", () => process.exit(0));
    process.stdin.on("error", () => process.exit(0));
    process.stdin.resume();
  }
  process.on("SIGTERM", () => process.exit(0));
}
