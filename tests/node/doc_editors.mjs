// Editors of rowcast's collaborative documents, for the integration tests:
// each is an unchanged `y-websocket` WebsocketProvider (with `ws` as Node's
// WebSocket, and without the cross-tab channel, so that editors reach each
// other only through the relay) over its own `yjs` Y.Doc, as an editor
// binding would hold one.
// The test drives them through a small HTTP API.
//
// Started as `node doc_editors.mjs`; listens on 127.0.0.1, port 0, and
// prints one line `{"port":N}`. When its stdin is a pipe, it exits once that
// closes (its parent, the test, is gone).
//
// API (JSON bodies):
//   POST /open        {id, url, name, token}  a provider for document `name`
//                     at `url` (ws://host:port/v1/docs); answers once it
//                     synced, or {synced:false, closes:[..]} after 10 s
//   POST /edit        {id, count, prefix}  `count` insertions of
//                     `<prefix><i> ` into the Y.Text "body", each at a
//                     random word boundary, one per event-loop turn (so the
//                     other editors' edits interleave)
//   POST /disconnect  {id}  the provider goes offline (edits stay local)
//   POST /connect     {id}  it reconnects and syncs
//   POST /close       {id}  destroys the provider
//   GET  /state?id=   {text, synced, connected, denied: [reason..],
//                     closes: [code..]}

import { createServer } from "node:http";

import WebSocket from "ws";
import { WebsocketProvider } from "y-websocket";
import * as Y from "yjs";

import { exitWithParent, readBody, send } from "./peer.mjs";

/** Editors by id: {doc, provider, denied, closes}. */
const editors = new Map();

// y-websocket reports a permission-denied message with console.warn.
const warn = console.warn;
console.warn = (...args) => {
  const text = args.join(" ");
  const match = /^Permission denied to access (\S+)\.\n([\s\S]*)$/.exec(text);
  if (match) {
    for (const editor of editors.values()) {
      if (editor.provider.url === match[1]) editor.denied.push(match[2]);
    }
    return;
  }
  warn(...args);
};

function editor(id) {
  const found = editors.get(id);
  if (!found) throw new Error(`no editor ${id}`);
  return found;
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

async function open({ id, url, name, token }) {
  const doc = new Y.Doc();
  const provider = new WebsocketProvider(url, name, doc, {
    params: { token },
    WebSocketPolyfill: WebSocket,
    maxBackoffTime: 500,
    // Editors in one process would otherwise also sync among themselves
    // (y-websocket's cross-tab BroadcastChannel), around the relay.
    disableBc: true,
  });
  const entry = { doc, provider, denied: [], closes: [] };
  provider.on("connection-close", (event) => {
    if (event) entry.closes.push(event.code);
  });
  editors.set(id, entry);
  const synced = await new Promise((resolve) => {
    if (provider.synced) return resolve(true);
    const timer = setTimeout(() => resolve(false), 10_000);
    provider.once("sync", (isSynced) => {
      clearTimeout(timer);
      resolve(isSynced);
    });
  });
  return { synced, closes: entry.closes };
}

async function edit({ id, count, prefix }) {
  const { doc } = editor(id);
  const text = doc.getText("body");
  for (let i = 0; i < count; i++) {
    // A random word boundary, so that every insertion stays a whole word.
    const current = text.toString();
    const boundaries = [0];
    for (let at = 1; at <= current.length; at++) if (current[at - 1] === " ") boundaries.push(at);
    const at = boundaries[Math.floor(Math.random() * boundaries.length)];
    text.insert(at, `${prefix}${i} `);
    await turn();
  }
  return { length: text.length };
}

function state(id) {
  const { doc, provider, denied, closes } = editor(id);
  return {
    text: doc.getText("body").toString(),
    synced: provider.synced,
    connected: provider.wsconnected,
    denied,
    closes,
  };
}

const routes = {
  "POST /open": open,
  "POST /edit": edit,
  "POST /disconnect": ({ id }) => (editor(id).provider.disconnect(), {}),
  "POST /connect": async ({ id }) => {
    const { provider } = editor(id);
    provider.connect();
    const synced = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), 10_000);
      provider.once("sync", (isSynced) => {
        clearTimeout(timer);
        resolve(isSynced);
      });
    });
    return { synced };
  },
  "POST /close": ({ id }) => {
    editor(id).provider.destroy();
    editors.delete(id);
    return {};
  },
};

const server = createServer(async (req, res) => {
  const url = new URL(req.url, "http://127.0.0.1");
  const body = (await readBody(req)).toString();
  try {
    if (req.method === "GET" && url.pathname === "/state") {
      return send(res, 200, state(url.searchParams.get("id")));
    }
    const route = routes[`${req.method} ${url.pathname}`];
    if (!route) return send(res, 404, { error: "no such call" });
    send(res, 200, await route(body ? JSON.parse(body) : {}));
  } catch (error) {
    send(res, 500, { error: String(error) });
  }
});

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});

exitWithParent();
