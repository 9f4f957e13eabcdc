import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { EventHandlers } from "../../src/handlers.js";
import { endpointUrl } from "../../src/client.js";
import { CATALOG_EVENTS, joinerName, registrarName, ROOM_KINDS } from "../../src/demo/catalog.js";
import { RealtimeClient } from "../../src/demo/compat.js";
import { fakeWebSocket, settle } from "./fake-socket.js";
import { stored } from "./harness.js";

describe("the catalog's names", () => {
  it("turns event names into the seed's registrars", () => {
    expect(registrarName("content-created")).toBe("onContentCreated");
    expect(registrarName("friend-request-accepted")).toBe("onFriendRequestAccepted");
    expect(registrarName("user-status-changed")).toBe("onUserStatusChanged");
    expect(registrarName("message")).toBe("onMessage");
    expect(new Set(CATALOG_EVENTS.map(registrarName)).size).toBe(CATALOG_EVENTS.length);
    expect(ROOM_KINDS.map(joinerName)).toEqual([
      "joinContentRoom",
      "joinCalendarRoom",
      "joinMediaRoom",
      "joinAlbumRoom",
      "joinDiaryRoom",
      "joinUserRoom",
    ]);
  });

  it("appends /v1/ws to a base URL and keeps a URL that has a path", () => {
    expect(endpointUrl("ws://localhost:3001")).toBe("ws://localhost:3001/v1/ws");
    expect(endpointUrl("http://localhost:3001/")).toBe("ws://localhost:3001/v1/ws");
    expect(endpointUrl("https://rt.example")).toBe("wss://rt.example/v1/ws");
    expect(endpointUrl("wss://rt.example/custom/ws?x=1")).toBe("wss://rt.example/custom/ws?x=1");
  });
});

describe("EventHandlers", () => {
  it("hands a stored event to each handler once, whichever rooms it came through", () => {
    const handlers = new EventHandlers();
    const got: unknown[] = [];
    handlers.on("content-updated", (frame) => got.push(frame.room));
    const off = handlers.on("content-updated", (frame) => got.push(`second:${frame.room}`));
    handlers.dispatch(stored("content_1", 7));
    handlers.dispatch(stored("user_1", 7));
    off();
    handlers.dispatch(stored("content_1", 8));
    handlers.dispatch({ type: "event", room: "content_1", event: "user-typing", data: {} });
    expect(got).toEqual(["content_1", "second:content_1", "content_1"]);
  });
});

describe("compat RealtimeClient", () => {
  beforeEach(() => void vi.useFakeTimers());
  afterEach(() => void vi.useRealTimers());

  it("speaks the seed's calls over the core client", async () => {
    const fake = fakeWebSocket();
    const realtime = new RealtimeClient();
    const seen: unknown[] = [];
    realtime.on("connect", () => seen.push("connect"));
    realtime.on("disconnect", () => seen.push("disconnect"));
    realtime.on("content-updated", (frame) => seen.push(frame.seq));
    realtime.joinContentRoom(42); // before connect: joined once connected
    realtime.connect("ws://relay.test:3001", "token", { WebSocket: fake.WebSocket });
    realtime.joinUserRoom(7);
    realtime.joinUserRoom(7);
    await settle();
    const socket = fake.latest;
    expect(socket.url).toBe("ws://relay.test:3001/v1/ws?token=token");
    socket.open();
    expect(realtime.connected).toBe(true);
    expect(socket.sentOf("join").map((frame) => frame.room)).toEqual(["content_42", "user_7"]);
    socket.push(stored("content_42", 1));
    socket.push(stored("user_7", 1));
    const sent = realtime.sendMessage(7, "Hello!");
    expect(socket.last("emit")).toMatchObject({ room: "user_7", event: "message", data: { text: "Hello!" } });
    socket.reply("emit");
    await expect(sent).resolves.toBe(true);
    realtime.leaveRoom("user_7");
    await vi.advanceTimersByTimeAsync(1);
    expect(socket.last("leave").room).toBe("user_7");
    realtime.disconnect();
    await expect(realtime.sendMessage(7, "late")).resolves.toBe(false);
    expect(seen).toEqual(["connect", 1, "disconnect"]);
  });
});
