/**
 * Type-level tests of the Web Push helper (checked by tsc, never run): a
 * real `ServiceWorkerRegistration` fits, `subscribe` gives its
 * `PushSubscription` back, and the client's own options are accepted.
 */

import { describe, expectTypeOf, it } from "vitest";

import { createClient, type ClientOptions } from "../../src/index.js";
import { createPush, type RowcastPush } from "../../src/push.js";

declare const registration: ServiceWorkerRegistration;

describe("createPush", () => {
  it("takes the client's options, and a ServiceWorkerRegistration", () => {
    const options: ClientOptions = { url: "ws://localhost:3001/v1/ws", token: () => "t" };
    createClient(options);
    const push = createPush(options);
    expectTypeOf(push).toEqualTypeOf<RowcastPush>();
    expectTypeOf(push.subscribe(registration)).toEqualTypeOf<Promise<PushSubscription>>();
    expectTypeOf(push.unsubscribe(registration)).toEqualTypeOf<Promise<boolean>>();
    expectTypeOf(push.vapidKey()).toEqualTypeOf<Promise<Uint8Array<ArrayBuffer>>>();
    // @ts-expect-error not a registration
    void push.subscribe("sw.js");
  });
});
