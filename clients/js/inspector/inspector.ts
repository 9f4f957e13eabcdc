/**
 * The live inspector `rowcast dev` serves at `/`: a demo user's connection
 * through the SDK (so resume and exactly-once come from it), the rooms it
 * joined, every event delivered with its diff and its lag (arrival minus
 * commit time), the head, the `left` notices, and the node's webhook and
 * Web Push attempts (`/dev/deliveries`). Plain DOM, no framework.
 */

import { createClient, memoryCursors, type EventFrame, type RowcastClient, type Subscription } from "../src/index.js";

const $ = <T extends HTMLElement>(selector: string) => document.querySelector(selector) as T;

/** The newest seq seen: from the welcome, join replies and events. */
let head = 0;
let client: RowcastClient | undefined;
/** Cursors outlive a user switch, so a room rejoined resumes where it was. */
const cursors = memoryCursors();
const rooms = new Map<string, { since: number | undefined; subscription?: Subscription; item: HTMLLIElement }>();

function seeHead(seq: unknown): void {
  if (typeof seq === "number" && seq > head) head = seq;
  $("#head").textContent = String(head);
}

/** The browser's WebSocket, reading the head from the welcome and join replies. */
class HeadWatchingWebSocket extends WebSocket {
  constructor(url: string | URL, protocols?: string | string[]) {
    super(url, protocols);
    this.addEventListener("message", (message) => {
      try {
        const frame = JSON.parse(String(message.data));
        if (frame.type === "welcome") $("#user-current").textContent = String(frame.user);
        if (frame.type === "welcome" || frame.type === "reply") seeHead(frame.head);
      } catch {
        // Not JSON: the SDK reports it.
      }
    });
  }
}

function connect(user: string): void {
  client?.close();
  $("#user-current").textContent = "";
  $("#status").textContent = "connecting";
  client = createClient({
    url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws`,
    token: async () => (await fetch(`/dev/token?sub=${encodeURIComponent(user)}`)).text(),
    WebSocket: HeadWatchingWebSocket,
    cursors,
  });
  client.on("status", (status) => {
    const element = $("#status");
    element.textContent = status;
    element.dataset.status = status;
  });
  for (const [room, entry] of rooms) subscribe(room, entry.since);
}

function subscribe(room: string, since: number | undefined): void {
  const entry = rooms.get(room)!;
  entry.item.querySelector(".notice")!.textContent = "";
  entry.item.dataset.left = "false";
  entry.subscription = client!.subscribe(room, {
    ...(since === undefined ? {} : { since }),
    onEvent: (frame) => show(frame),
    onGap: (gap) => notice(room, `gap: events after ${gap.since} are no longer kept (head ${gap.head})`),
    onLeft: (reason) => {
      entry.item.dataset.left = "true";
      notice(room, `left: ${reason}`);
    },
    onError: (error) => notice(room, `refused: ${error.code}`),
  });
}

function notice(room: string, text: string): void {
  rooms.get(room)!.item.querySelector(".notice")!.textContent = text;
  const line = document.createElement("li");
  line.textContent = `${new Date().toLocaleTimeString()} ${room}: ${text}`;
  $("#notices").prepend(line);
}

function join(room: string, since: number | undefined): void {
  if (!room || rooms.has(room)) return;
  const item = document.createElement("li");
  item.dataset.room = room;
  item.innerHTML = '<code class="name"></code> <span class="notice"></span> <button type="button">leave</button>';
  item.querySelector(".name")!.textContent = room;
  item.querySelector("button")!.addEventListener("click", () => {
    rooms.get(room)?.subscription?.unsubscribe();
    rooms.delete(room);
    item.remove();
  });
  $("#rooms").append(item);
  rooms.set(room, { since, item });
  subscribe(room, since);
}

/** One row: seq, room, event, data with `old` values struck through, commit time, lag. */
function show(frame: EventFrame): void {
  seeHead(frame.seq);
  const row = document.createElement("tr");
  row.dataset.seq = String(frame.seq ?? "");
  row.dataset.room = frame.room;
  row.dataset.event = frame.event;
  const lag = frame.at ? Date.now() - Date.parse(frame.at) : undefined;
  const cells = [String(frame.seq ?? "-"), frame.room, frame.event, "", frame.at ?? "", lag === undefined ? "" : `${lag} ms`];
  for (const text of cells) {
    const cell = document.createElement("td");
    cell.textContent = text;
    row.append(cell);
  }
  row.children[3]!.append(diff(frame));
  $("#events").prepend(row);
}

function diff(frame: EventFrame): HTMLElement {
  const list = document.createElement("span");
  const old = (frame.old ?? {}) as Record<string, unknown>;
  for (const [column, value] of Object.entries(frame.data)) {
    const part = document.createElement("span");
    part.className = "column";
    if (column in old) {
      const before = document.createElement("del");
      before.textContent = JSON.stringify(old[column]);
      part.append(`${column}: `, before, " ");
      const after = document.createElement("ins");
      after.textContent = JSON.stringify(value);
      part.append(after);
    } else {
      part.textContent = `${column}: ${JSON.stringify(value)}`;
    }
    list.append(part);
  }
  if (frame.count !== undefined) list.append(` (×${frame.count})`);
  return list;
}

/** One attempt of a sink, as `/dev/deliveries` lists it. */
interface Delivery {
  id: number;
  at: string;
  sink: string;
  target: string;
  seq: number;
  event: string;
  attempt: number;
  outcome: "delivered" | "retry" | "gave-up" | "gone";
  status: number | null;
  error: string | null;
  ms: number;
}

/** The last attempt listed: the next poll asks only for newer ones. */
let lastDelivery = 0;

async function pollDeliveries(): Promise<void> {
  try {
    const response = await fetch(`/dev/deliveries?after=${lastDelivery}`, { cache: "no-store" });
    if (response.ok) {
      for (const delivery of (await response.json()) as Delivery[]) showDelivery(delivery);
    }
  } catch {
    // The relay is restarting: the next poll catches up.
  }
  setTimeout(pollDeliveries, 1000);
}

function showDelivery(delivery: Delivery): void {
  lastDelivery = Math.max(lastDelivery, delivery.id);
  $("#deliveries-empty")?.remove();
  const row = document.createElement("tr");
  row.dataset.seq = String(delivery.seq);
  row.dataset.sink = delivery.sink;
  row.dataset.outcome = delivery.outcome;
  const time = new Date(delivery.at).toLocaleTimeString();
  const cells = [time, delivery.sink, delivery.target, String(delivery.seq), delivery.event, String(delivery.attempt), delivery.outcome, delivery.status === null ? "" : String(delivery.status), `${delivery.ms} ms`, delivery.error ?? ""];
  for (const text of cells) {
    const cell = document.createElement("td");
    cell.textContent = text;
    row.append(cell);
  }
  $("#deliveries").prepend(row);
}

$("#join").addEventListener("submit", (submit) => {
  submit.preventDefault();
  const since = $<HTMLInputElement>("#since").value.trim();
  join($<HTMLInputElement>("#room").value.trim(), since === "" ? undefined : Number(since));
});
$("#user-form").addEventListener("submit", (submit) => {
  submit.preventDefault();
  connect($<HTMLSelectElement>("#user").value);
});
connect($<HTMLSelectElement>("#user").value);
void pollDeliveries();
