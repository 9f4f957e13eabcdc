/**
 * Type-level tests (checked by tsc, through vitest's typecheck and `npm run
 * typecheck`; never run): a client typed with a map that `rowcast types`
 * generated (the demo schema's, src/demo/events.ts) hands each listener
 * that event's frame, refuses names the map does not have, and narrows
 * unions on `frame.event`; without a map any name goes and `data` is a
 * record of unknown values. Every `@ts-expect-error` line must be an error.
 */

import { describe, expectTypeOf, it } from "vitest";

import { createClient, type EventFrame, type FrameOf, type RowcastClient, type Status } from "../../src/index.js";
import useDemoRealtime from "../../src/demo/react.js";
import realtimeClient from "../../src/demo/compat.js";
import type { DemoEvents } from "../../src/demo/catalog.js";
import type {
  ContentCreatedData,
  ContentUpdatedData,
  ContentUpdatedOld,
  RowcastEvents,
  UserStatusChangedData,
} from "../../src/demo/events.js";
import { RealtimeProvider, useRealtime, useRoom } from "../../src/react.js";

const options = { url: "ws://localhost:3001/v1/ws", token: "t" };

describe("a client typed with a generated map", () => {
  const client = createClient<RowcastEvents>(options);

  it("gives on(name) that event's frame", () => {
    client.on("content-created", (frame) => {
      expectTypeOf(frame).toEqualTypeOf<FrameOf<RowcastEvents, "content-created">>();
      expectTypeOf(frame.event).toEqualTypeOf<"content-created">();
      expectTypeOf(frame.data).toEqualTypeOf<ContentCreatedData>();
      expectTypeOf(frame.data.title).toEqualTypeOf<string | null>();
      expectTypeOf(frame.old).toEqualTypeOf<undefined>();
      expectTypeOf(frame.seq).toEqualTypeOf<number | undefined>();
      // @ts-expect-error a column content-created does not expose
      void frame.data.email;
    });
    client.on("content-updated", (frame) => {
      expectTypeOf(frame.data).toEqualTypeOf<ContentUpdatedData | Partial<ContentUpdatedData>>();
      expectTypeOf(frame.old).toEqualTypeOf<ContentUpdatedOld>();
    });
    client.on("user-status-changed", (frame) => {
      expectTypeOf(frame.data).toEqualTypeOf<UserStatusChangedData>();
    });
    expectTypeOf(client.on("content-created", () => {})).toEqualTypeOf<() => void>();
  });

  it("refuses an event name the map does not have", () => {
    // @ts-expect-error not an event of the map
    client.on("content-creatd", () => {});
    // @ts-expect-error a client event, not part of the generated map
    client.on("user-typing", () => {});
    // @ts-expect-error the handler expects another event's data
    client.on("content-created", (frame: FrameOf<RowcastEvents, "content-updated">) => frame.old);
  });

  it("keeps status and event, and narrows the union of every frame on `event`", () => {
    client.on("status", (status) => expectTypeOf(status).toEqualTypeOf<Status>());
    client.on("event", (frame) => {
      expectTypeOf(frame).toEqualTypeOf<FrameOf<RowcastEvents>>();
      if (frame.event === "content-updated") expectTypeOf(frame.old).toEqualTypeOf<ContentUpdatedOld>();
      // @ts-expect-error no such event in the map
      if (frame.event === "content-creatd") return;
    });
    client.subscribe("content_1", {
      onEvent: (frame) => {
        expectTypeOf(frame.event).toEqualTypeOf<keyof RowcastEvents>();
        if (frame.event === "content-created") expectTypeOf(frame.data).toEqualTypeOf<ContentCreatedData>();
      },
    });
  });
});

describe("a client without a map", () => {
  const client = createClient(options);

  it("takes any name and gives a record of unknown values", () => {
    expectTypeOf(client).toEqualTypeOf<RowcastClient>();
    client.on("anything-at-all", (frame) => {
      expectTypeOf(frame.event).toEqualTypeOf<"anything-at-all">();
      expectTypeOf(frame.data).toEqualTypeOf<Record<string, unknown>>();
      expectTypeOf(frame.data.title).toEqualTypeOf<unknown>();
    });
    client.on("event", (frame) => expectTypeOf(frame).toMatchTypeOf<EventFrame>());
    client.subscribe("room", { onEvent: (frame) => expectTypeOf(frame.event).toEqualTypeOf<string>() });
    const name: string = "chosen-at-run-time";
    client.on(name, (frame) => expectTypeOf(frame.data).toEqualTypeOf<Record<string, unknown>>());
  });
});

describe("React", () => {
  it("types useRealtime and useRoom by the map", () => {
    const realtime = useRealtime<RowcastEvents>("token", "ws://localhost:3001");
    realtime.on("content-created", (frame) => expectTypeOf(frame.data).toEqualTypeOf<ContentCreatedData>());
    // @ts-expect-error not an event of the map
    realtime.on("content-creatd", () => {});
    expectTypeOf(realtime.client).toEqualTypeOf<RowcastClient<RowcastEvents> | undefined>();

    const typed = createClient<RowcastEvents>(options);
    useRoom("content_1", (frame) => expectTypeOf(frame).toEqualTypeOf<FrameOf<RowcastEvents>>(), { client: typed });
    useRoom<RowcastEvents>("content_1", (frame) => expectTypeOf(frame.event).toEqualTypeOf<keyof RowcastEvents>());
    useRoom("content_1", (frame) => expectTypeOf(frame.event).toEqualTypeOf<string>());
    RealtimeProvider({ client: typed });
    RealtimeProvider({ client: createClient(options) });
  });
});

describe("the demo entry points", () => {
  it("types the seed's registrars and handlers by the demo's map", () => {
    const demo = useDemoRealtime("token", "ws://localhost:3001");
    demo.onContentCreated((frame) => expectTypeOf(frame.data).toEqualTypeOf<ContentCreatedData>());
    demo.onUserTyping((frame) => expectTypeOf(frame.data).toEqualTypeOf<Record<string, unknown>>());
    expectTypeOf(demo.joinContentRoom).toEqualTypeOf<(id: string | number) => () => void>();
    expectTypeOf(demo.sendMessage).returns.toEqualTypeOf<Promise<boolean>>();
    demo.on("barrier", (frame: EventFrame) => frame.seq); // names outside the catalog are taken too
    // @ts-expect-error no registrar for an event outside the catalog
    void demo.onBarrier;
    expectTypeOf(demo.client).toEqualTypeOf<RowcastClient<DemoEvents> | undefined>();

    realtimeClient.on("content-updated", (frame) => expectTypeOf(frame.old).toEqualTypeOf<ContentUpdatedOld>());
    realtimeClient.on("connect", () => {});
  });
});
