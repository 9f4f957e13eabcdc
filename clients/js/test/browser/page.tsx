/**
 * The test page: the demo's seed hook under StrictMode, plus `useRoom` on
 * the same room and the core hook typed with the generated demo map on the
 * same connection, with a WebSocket that counts the frames the page sends.
 */

import { StrictMode, useCallback, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";

import useRealtime, { RealtimeProvider, useRoom } from "../../src/demo/react.js";
import type { RowcastEvents } from "../../src/demo/events.js";
import { useRealtime as useCoreRealtime } from "../../src/react.js";

interface Probe {
  sockets: WebSocket[];
  sent: Array<{ type: string; room?: string }>;
  unmount(): void;
}

const probe: Probe = { sockets: [], sent: [], unmount: () => {} };
(window as unknown as { probe: Probe }).probe = probe;

/** The browser's WebSocket, counting sockets and sent frames. */
class CountingWebSocket extends WebSocket {
  constructor(url: string | URL, protocols?: string | string[]) {
    super(url, protocols);
    probe.sockets.push(this);
  }
  override send(data: string): void {
    probe.sent.push(JSON.parse(data));
    super.send(data);
  }
}
window.WebSocket = CountingWebSocket;

const params = new URLSearchParams(location.search);
const serverUrl = params.get("server")!;
const token = params.get("token")!;

function App() {
  const { connectionStatus, onContentUpdated, joinContentRoom, client } = useRealtime(token, serverUrl);
  const [titles, setTitles] = useState<string[]>([]);
  const joinFirst = useCallback(() => joinContentRoom(1), [joinContentRoom]);

  useEffect(
    () => onContentUpdated((frame) => setTitles((seen) => [...seen, String(frame.data.title)])),
    [onContentUpdated],
  );

  return (
    <main>
      <p id="status" data-connected={String(connectionStatus.connected)}>
        {connectionStatus.status}
      </p>
      <ul id="titles">
        {titles.map((title, i) => (
          <li key={i}>{title}</li>
        ))}
      </ul>
      <CoreTitles />
      {/* Mounted once the connection is open, so StrictMode's double mount happens while joins go out at once. */}
      {connectionStatus.connected && (
        <RealtimeProvider client={client}>
          <Feed join={joinFirst} />
        </RealtimeProvider>
      )}
    </main>
  );
}

/** The core hook on the same URL: the same connection, its `on` typed by the generated map. */
function CoreTitles() {
  const { on } = useCoreRealtime<RowcastEvents>(token, serverUrl);
  const [titles, setTitles] = useState<string[]>([]);
  useEffect(() => on("content-updated", (frame) => setTitles((seen) => [...seen, String(frame.data.title)])), [on]);
  return (
    <ul id="core-titles">
      {titles.map((title, i) => (
        <li key={i}>{title}</li>
      ))}
    </ul>
  );
}

/** Joins content_1 through the hook, and reads it through useRoom: one server join in all. */
function Feed({ join }: { join: () => () => void }) {
  const [seq, setSeq] = useState<number>();
  useEffect(join, [join]);
  useRoom("content_1", (frame) => setSeq(frame.seq));
  return <p id="room-seq">{seq ?? "none"}</p>;
}

const root = createRoot(document.getElementById("root")!);
root.render(
  <StrictMode>
    <App />
  </StrictMode>,
);
probe.unmount = () => root.unmount();
