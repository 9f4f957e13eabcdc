/**
 * Integration harness: a database of its own per test file (a copy of the
 * template holding the demo schema and the relay's migrations), the real
 * `rowcast serve` on a fixed free port that can be killed, stopped and
 * started again, HS256 tokens, and waiting on conditions with a deadline.
 *
 * Needs ROWCAST_BIN, ROWCAST_TEST_ADMIN_URL and ROWCAST_TEST_TEMPLATE
 * (`cargo test --test js_client` sets them).
 */

import { spawn, type ChildProcess } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";

import pg from "pg";

/** The HMAC secret of every test relay. */
export const SECRET = "js-client-test-secret-0123456789";

function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set. The integration tests need ROWCAST_BIN (the rowcast binary), ROWCAST_TEST_ADMIN_URL ` +
        "(a Postgres URL allowed to create databases) and ROWCAST_TEST_TEMPLATE (a database with the demo schema " +
        "and the relay's migrations); `cargo test --test js_client` sets all three.",
    );
  }
  return value;
}

/** An HS256 JWT for `sub`, expiring `ttlSeconds` from now (negative: already expired). */
export function mintToken(sub: string, ttlSeconds = 3_600, claims: Record<string, unknown> = {}): string {
  const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ sub, exp: Math.floor(Date.now() / 1000) + ttlSeconds, ...claims })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

/** Polls `check` until it returns something other than `undefined`/`false`, or fails after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A database of its own, copied from the template, dropped at the end. */
export class TestDatabase {
  private constructor(
    readonly name: string,
    readonly url: string,
    private readonly pool: pg.Pool,
  ) {}

  static async create(): Promise<TestDatabase> {
    const admin = required("ROWCAST_TEST_ADMIN_URL");
    const template = required("ROWCAST_TEST_TEMPLATE");
    const name = `js_${process.pid}_${randomBytes(4).toString("hex")}`;
    await withClient(admin, (client) => client.query(`CREATE DATABASE ${name} TEMPLATE ${quoteIdent(template)}`));
    const url = withDatabase(admin, name);
    const pool = new pg.Pool({ connectionString: url, max: 4 });
    // An idle connection ended by the DROP ... WITH (FORCE) at the end is expected, not an error.
    pool.on("error", () => {});
    return new TestDatabase(name, url, pool);
  }

  query<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<pg.QueryResult<R>> {
    return this.pool.query<R>(sql, params);
  }

  /** Four users (1 and 2 are friends) and public content 1 by user 1; before the relay starts, so no events. */
  async seed(): Promise<void> {
    await this.query(`
      INSERT INTO users (id, username) VALUES (1, 'alice'), (2, 'bob'), (3, 'carol'), (4, 'dave');
      INSERT INTO friendships (user_a, user_b) VALUES (1, 2);
      INSERT INTO content (id, author_id, title, visibility) VALUES (1, 1, 'The Lighthouse', 'public');
      SELECT setval(pg_get_serial_sequence('users', 'id'), 100);
      SELECT setval(pg_get_serial_sequence('content', 'id'), 100);`);
  }

  /** `count` committed updates of content 1, each its own transaction (one `content-updated` each). */
  async updateContent(count: number, label = "v"): Promise<void> {
    for (let i = 0; i < count; i++) {
      await this.query("UPDATE content SET title = $1 WHERE id = 1", [`${label}-${i}-${randomBytes(3).toString("hex")}`]);
    }
  }

  /** Publishes a marker event to `room` and returns its seq once stored: everything committed before is stored too. */
  async barrier(room: string): Promise<number> {
    const mark = randomBytes(8).toString("hex");
    await this.query("SELECT realtime.publish(ARRAY[$1], 'barrier', jsonb_build_object('mark', $2::text))", [room, mark]);
    return waitFor("the barrier to be stored", async () => {
      const { rows } = await this.query<{ seq: string }>(
        "SELECT seq FROM realtime.outbox WHERE event = 'barrier' AND data->>'mark' = $1",
        [mark],
      );
      return rows[0] ? Number(rows[0].seq) : undefined;
    });
  }

  /** The seqs stored for `room`, in order. */
  async roomSeqs(room: string): Promise<number[]> {
    const { rows } = await this.query<{ seq: string }>("SELECT seq FROM realtime.events WHERE room = $1 ORDER BY seq", [room]);
    return rows.map((row) => Number(row.seq));
  }

  async drop(): Promise<void> {
    await this.pool.end();
    await withClient(required("ROWCAST_TEST_ADMIN_URL"), (client) =>
      client.query(`DROP DATABASE IF EXISTS ${this.name} WITH (FORCE)`),
    );
  }
}

/** The demo schema's routes file at the repository's root. */
const DEMO_ROUTES = fileURLToPath(new URL("../../../../routes.toml", import.meta.url));

/** `rowcast serve` (or another subcommand) on one port for the whole test, across kills and restarts. */
export class Relay {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  /** The last lines the relay wrote to stderr, shown when it fails to start. */
  private readonly log: string[] = [];

  private constructor(
    private readonly db: TestDatabase,
    readonly port: number,
    private readonly env: Record<string, string>,
    private readonly command: string,
  ) {}

  /**
   * Starts a relay for `db`; `env` adds or overrides settings (see
   * docs/configuration.md), `command` is the subcommand (`dev` runs the
   * demo seed, the inspector and, unless turned off, the demo writer).
   */
  static async start(db: TestDatabase, env: Record<string, string> = {}, command = "serve"): Promise<Relay> {
    const relay = new Relay(db, await freePort(), env, command);
    await relay.start();
    return relay;
  }

  /** A fresh, seeded test database and a relay serving it. */
  static async onSeededDatabase(): Promise<{ db: TestDatabase; relay: Relay }> {
    const db = await TestDatabase.create();
    await db.seed();
    return { db, relay: await Relay.start(db) };
  }

  /** Stops `relay` and drops `db` (either may not have started). */
  static async tearDown(relay: Relay | undefined, db: TestDatabase | undefined): Promise<void> {
    await relay?.stop();
    await db?.drop();
  }

  /** The seed-style base URL. */
  get baseUrl(): string {
    return `ws://127.0.0.1:${this.port}`;
  }

  get wsUrl(): string {
    return `${this.baseUrl}/v1/ws`;
  }

  get httpUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    if (this.child) throw new Error("the relay is already running");
    const child = spawn(required("ROWCAST_BIN"), [this.command], {
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: process.env.HOME ?? "/tmp",
        RUST_LOG: "warn",
        DATABASE_URL: this.db.url,
        JWT_SECRET: SECRET,
        SOCKET_PORT: String(this.port),
        ROWCAST_BIND: "127.0.0.1",
        ROWCAST_CAPTURE: "trigger",
        ROWCAST_ROUTES: DEMO_ROUTES,
        ROWCAST_POLL_INTERVAL: "200ms",
        ROWCAST_STARTUP_TIMEOUT: "5s",
        ROWCAST_DB_POOL: "4",
        ...this.env,
      },
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.child = child;
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
    child.stderr?.setEncoding("utf8").on("data", (text: string) => this.remember(text));
    killedWithUs.add(child);
    await this.ready(child);
  }

  /** SIGKILL: a crash, nothing stored on the way out. */
  kill(): Promise<void> {
    return this.signal("SIGKILL");
  }

  /** SIGTERM: the relay closes every connection with 1001 and exits. */
  stop(): Promise<void> {
    return this.signal("SIGTERM");
  }

  /** A counter or gauge from `/metrics` (summed over its labels), 0 when absent. */
  async metric(name: string): Promise<number> {
    const text = await (await fetch(`${this.httpUrl}/metrics`)).text();
    return text
      .split("\n")
      .filter((line) => line.startsWith(`${name} `) || line.startsWith(`${name}{`))
      .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0);
  }

  private async signal(signal: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child) return;
    child.kill(signal);
    await withDeadline(this.exited, 20_000, `the relay to exit after ${signal}`);
    killedWithUs.delete(child);
    this.child = undefined;
  }

  private async ready(child: ChildProcess): Promise<void> {
    let gone = false;
    void this.exited.then(() => (gone = true));
    try {
      await waitFor(
        "the relay's /readyz",
        async () => {
          if (gone) throw new Error(`the relay exited with ${child.exitCode ?? child.signalCode}`);
          const response = await fetch(`${this.httpUrl}/readyz`).catch(() => undefined);
          return response?.status === 200;
        },
        30_000,
      );
    } catch (error) {
      throw new Error(`${(error as Error).message}\nrelay log:\n${this.log.join("\n")}`);
    }
  }

  private remember(text: string): void {
    if (process.env.ROWCAST_TEST_LOG) process.stderr.write(text);
    this.log.push(...text.trimEnd().split("\n"));
    this.log.splice(0, Math.max(0, this.log.length - 100));
  }
}

/** Relays still running when the test process exits are killed with it. */
const killedWithUs = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of killedWithUs) child.kill("SIGKILL");
});

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

async function withClient<T>(url: string, use: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await use(client);
  } finally {
    await client.end();
  }
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

async function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
