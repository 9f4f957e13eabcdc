import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { localStorageCursors, memoryCursors, type CursorStorage } from "../../src/cursors.js";
import { openHarness, reconnect, stored } from "./harness.js";

class MapStorage implements CursorStorage {
  readonly items = new Map<string, string>();
  full = false;
  getItem(key: string) {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string) {
    if (this.full) throw new Error("QuotaExceededError");
    this.items.set(key, value);
  }
}

describe("memoryCursors", () => {
  it("returns what was set, per room, and the initial values", () => {
    const cursors = memoryCursors({ content_1: 7 });
    cursors.set("content_2", 12);
    expect(cursors.get("content_1")).toBe(7);
    expect(cursors.get("content_2")).toBe(12);
    expect(cursors.get("content_3")).toBeUndefined();
  });
});

describe("localStorageCursors", () => {
  it("stores under the prefix and reads back numbers only", () => {
    const storage = new MapStorage();
    const cursors = localStorageCursors({ storage, prefix: "app:" });
    cursors.set("content_1", 42);
    expect(storage.items.get("app:content_1")).toBe("42");
    expect(localStorageCursors({ storage, prefix: "app:" }).get("content_1")).toBe(42);
    storage.items.set("app:content_2", "garbage");
    expect(cursors.get("content_2")).toBeUndefined();
  });

  it("keeps working from memory when the storage is full", () => {
    const storage = new MapStorage();
    const cursors = localStorageCursors({ storage });
    cursors.set("content_1", 5);
    storage.full = true;
    cursors.set("content_1", 9);
    expect(cursors.get("content_1")).toBe(9);
  });

  it("needs a storage where there is no localStorage", () => {
    expect(() => localStorageCursors()).toThrow(/localStorage/);
  });
});

describe("the client and its cursor store", () => {
  beforeEach(() => void vi.useFakeTimers());
  afterEach(() => void vi.useRealTimers());

  it("joins with the stored cursor, writes each delivered seq, and rejoins from it", async () => {
    const cursors = memoryCursors({ content_1: 10 });
    const h = await openHarness({ cursors }, 50);
    h.client.subscribe("content_1");
    expect(h.fake.latest.last("join")).toMatchObject({ room: "content_1", since: 10 });
    h.fake.latest.push(stored("content_1", 11));
    h.fake.latest.push(stored("content_1", 14));
    expect(cursors.get("content_1")).toBe(14);
    expect(h.client.lastSeq("content_1")).toBe(14);
    await reconnect(h);
    expect(h.fake.latest.last("join")).toMatchObject({ room: "content_1", since: 14 });
  });

  it("lets an explicit since win over the stored cursor", async () => {
    const h = await openHarness({ cursors: memoryCursors({ content_1: 10 }) });
    h.client.subscribe("content_1", { since: 3 });
    expect(h.fake.latest.last("join").since).toBe(3);
  });
});
