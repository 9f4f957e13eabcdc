/**
 * Reconnect delays: exponential growth with full jitter above a floor.
 */

export interface ReconnectOptions {
  /** The shortest delay before a new attempt, and the growth's base. */
  minDelayMs: number;
  /** The longest delay. */
  maxDelayMs: number;
  /**
   * A connection that stayed open this long resets the growth. Resetting on
   * open instead would let a relay that accepts and then drops every
   * connection (an overloaded node, a token refused after the upgrade) pull
   * the client into a loop at the minimum delay.
   */
  stableAfterMs: number;
}

export const DEFAULT_RECONNECT: ReconnectOptions = {
  minDelayMs: 250,
  maxDelayMs: 10_000,
  stableAfterMs: 5_000,
};

/**
 * The delay before attempt `n` (counting from 0) is uniform in
 * `[minDelayMs, min(maxDelayMs, minDelayMs * 2^(n+1))]`. The jitter spreads
 * the thousands of clients that a relay restart disconnects at the same
 * instant; the floor keeps a client that is refused at once (a bad token, a
 * relay that is down) from ever retrying in a tight loop.
 */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly options: ReconnectOptions,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay before the next attempt; each call widens the next window. */
  next(): number {
    const { minDelayMs, maxDelayMs } = this.options;
    const ceiling = Math.min(maxDelayMs, minDelayMs * 2 ** Math.min(this.attempt + 1, 30));
    this.attempt += 1;
    return minDelayMs + this.random() * (ceiling - minDelayMs);
  }

  /** Back to the narrowest window (after a stable connection). */
  reset(): void {
    this.attempt = 0;
  }

  /** Straight to the widest window (the relay said: back off, 4029). */
  saturate(): void {
    this.attempt = 30;
  }
}

/** Fills in defaults and checks the bounds, so a typo fails at creation, not at the first drop. */
export function reconnectOptions(given: Partial<ReconnectOptions> = {}): ReconnectOptions {
  const options = { ...DEFAULT_RECONNECT, ...given };
  const { minDelayMs, maxDelayMs, stableAfterMs } = options;
  if (!(minDelayMs > 0) || !(maxDelayMs >= minDelayMs) || !(stableAfterMs >= 0)) {
    throw new RangeError("reconnect: need 0 < minDelayMs <= maxDelayMs and stableAfterMs >= 0");
  }
  return options;
}
