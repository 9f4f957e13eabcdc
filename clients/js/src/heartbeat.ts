/**
 * Dead-connection detection. A connection can die without a close (a
 * laptop that slept, a NAT that forgot the flow), and browsers hide the
 * relay's WebSocket pings from scripts, so the client sends protocol `ping`
 * frames itself and watches for any traffic coming back.
 */

/** The shortest interval honoured, whatever the welcome says. */
const MIN_INTERVAL_MS = 1_000;

/**
 * Every half interval: if nothing arrived for a whole interval (two `ping`s
 * unanswered), the connection is declared dead; otherwise one `ping` goes
 * out. A dead connection is found within one and a half intervals.
 */
export class Heartbeat {
  private timer: ReturnType<typeof setInterval> | undefined;
  private lastHeard = 0;
  private readonly intervalMs: number;

  constructor(
    intervalMs: number,
    private readonly ping: () => void,
    private readonly dead: () => void,
  ) {
    this.intervalMs = Math.max(MIN_INTERVAL_MS, Number.isFinite(intervalMs) ? intervalMs : 0);
  }

  start(): void {
    this.stop();
    this.lastHeard = Date.now();
    this.timer = setInterval(() => this.tick(), this.intervalMs / 2);
  }

  /** Something arrived: the connection is alive. */
  heard(): void {
    this.lastHeard = Date.now();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private tick(): void {
    if (Date.now() - this.lastHeard >= this.intervalMs) {
      this.stop();
      this.dead();
    } else {
      this.ping();
    }
  }
}
