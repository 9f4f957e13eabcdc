import { describe, expect, it } from "vitest";

import { Backoff, reconnectOptions } from "../../src/backoff.js";

const options = { minDelayMs: 250, maxDelayMs: 10_000, stableAfterMs: 5_000 };

describe("Backoff", () => {
  it("keeps every delay between the floor and the doubling ceiling, capped at the maximum", () => {
    const backoff = new Backoff(options);
    for (let attempt = 0; attempt < 20; attempt++) {
      const delay = backoff.next();
      const ceiling = Math.min(options.maxDelayMs, options.minDelayMs * 2 ** (attempt + 1));
      expect(delay).toBeGreaterThanOrEqual(options.minDelayMs);
      expect(delay).toBeLessThanOrEqual(ceiling);
    }
  });

  it("spreads delays over the whole window (full jitter)", () => {
    const low = new Backoff(options, () => 0);
    const high = new Backoff(options, () => 0.999_999);
    const lows = Array.from({ length: 8 }, () => low.next());
    const highs = Array.from({ length: 8 }, () => high.next());
    expect(lows.every((delay) => delay === 250)).toBe(true);
    expect(highs.map(Math.round)).toEqual([500, 1_000, 2_000, 4_000, 8_000, 10_000, 10_000, 10_000]);
  });

  it("starts over after reset and jumps to the widest window when saturated", () => {
    const backoff = new Backoff(options, () => 0.999_999);
    backoff.next();
    backoff.next();
    backoff.reset();
    expect(Math.round(backoff.next())).toBe(500);
    backoff.saturate();
    expect(Math.round(backoff.next())).toBe(10_000);
  });

  it("rejects bounds that make no sense", () => {
    expect(() => reconnectOptions({ minDelayMs: 0 })).toThrow(RangeError);
    expect(() => reconnectOptions({ minDelayMs: 500, maxDelayMs: 100 })).toThrow(RangeError);
    expect(reconnectOptions({ maxDelayMs: 2_000 })).toEqual({ minDelayMs: 250, maxDelayMs: 2_000, stableAfterMs: 5_000 });
  });
});
