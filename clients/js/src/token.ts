/**
 * Tokens: where the connection's JWT comes from, and keeping it fresh on an
 * open connection. The JWT's payload is read (never verified: the relay
 * does that) only for `exp`, to know when to refresh.
 */

/** Why the client asks for a token. */
export type TokenReason =
  /** A new connection (the first, or a reconnect after a drop). */
  | "connect"
  /**
   * A new connection after the last token was refused: a 4001 close, an
   * HTTP 401 at the upgrade, or (in browsers, which hide the status) an
   * upgrade that failed before the connection opened. Return a new token,
   * not a cached one.
   */
  | "refused"
  /** The open connection's token expires soon; a later `exp` is sent as `auth`. */
  | "refresh";

/** A fixed token, or a function called for every connection and refresh. */
export type TokenSource = string | ((request: { reason: TokenReason }) => string | Promise<string>);

/** The `exp` claim (seconds since the epoch) of a JWT, or `undefined`. */
export function tokenExpiry(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (!payload) return undefined;
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const exp = (JSON.parse(new TextDecoder().decode(bytes)) as { exp?: unknown }).exp;
    return typeof exp === "number" && Number.isFinite(exp) ? exp : undefined;
  } catch {
    return undefined;
  }
}

/** A refresh is not retried closer to `exp` than this. */
const MIN_RETRY_MS = 1_000;

/**
 * The token of the current connection, and its refresh.
 *
 * Guarantees: the token source is asked once per connection attempt, with
 * the reason; on an open connection whose token has an `exp`, it is asked
 * again `leadMs` before `exp` (or half-way there for short-lived tokens),
 * and a token with a later `exp` is sent as `auth`. A token that is not
 * fresher is asked for again half-way to `exp`; if none comes, the relay
 * closes with 4001 at `exp` and the next connection asks with `refused`.
 */
export class TokenKeeper {
  private current: string | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** Bumped on every disarm, so a refresh in flight knows it is stale. */
  private generation = 0;

  constructor(
    private readonly source: TokenSource,
    private readonly leadMs: number,
    private readonly sendAuth: (token: string) => Promise<unknown>,
  ) {}

  /** The token for a new connection. */
  async forConnect(refused: boolean): Promise<string> {
    this.current = await this.ask(refused ? "refused" : "connect");
    return this.current;
  }

  /** Schedules the refresh of the current token (the connection is open). */
  arm(): void {
    this.disarm();
    const exp = this.current === undefined ? undefined : tokenExpiry(this.current);
    if (typeof this.source === "string" || exp === undefined) return;
    const remaining = exp * 1000 - Date.now();
    this.schedule(exp, remaining > 2 * this.leadMs ? remaining - this.leadMs : remaining / 2);
  }

  /** Cancels the refresh (the connection ended). */
  disarm(): void {
    this.generation += 1;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(exp: number, delayMs: number): void {
    const generation = this.generation;
    this.timer = setTimeout(() => void this.refresh(exp, generation), Math.max(0, delayMs));
  }

  private async refresh(exp: number, generation: number): Promise<void> {
    const token = await this.ask("refresh").catch(() => undefined);
    if (generation !== this.generation) return;
    const next = token === undefined ? undefined : tokenExpiry(token);
    if (token === undefined || next === undefined || next <= exp) {
      const halfway = (exp * 1000 - Date.now()) / 2;
      if (halfway >= MIN_RETRY_MS) this.schedule(exp, halfway);
      return;
    }
    const accepted = await this.sendAuth(token).then(
      () => true,
      () => false,
    );
    if (generation !== this.generation || !accepted) return;
    this.current = token;
    this.arm();
  }

  private async ask(reason: TokenReason): Promise<string> {
    const token = typeof this.source === "string" ? this.source : await this.source({ reason });
    if (typeof token !== "string" || token === "") throw new Error("the token source gave no token");
    return token;
  }
}
