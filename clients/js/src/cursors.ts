/**
 * Cursors: the last stored seq delivered per room, kept where the app wants
 * (memory by default, or `localStorage` so a page reload resumes too). A
 * room's next `join` asks the relay for the events after its cursor.
 */

/** Where cursors live. `set` is called once per delivered stored event, in seq order. */
export interface CursorStore {
  get(room: string): number | undefined;
  set(room: string, seq: number): void;
}

/** Cursors for the life of the page or process. */
export function memoryCursors(initial: Record<string, number> = {}): CursorStore {
  const cursors = new Map(Object.entries(initial));
  return {
    get: (room) => cursors.get(room),
    set: (room, seq) => void cursors.set(room, seq),
  };
}

/** The part of the Web Storage API the cursors use. */
export interface CursorStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export interface LocalStorageCursorsOptions {
  /** Key prefix, so two apps (or two users) on one origin keep apart. */
  prefix?: string;
  /** Defaults to `globalThis.localStorage`. */
  storage?: CursorStorage;
}

/**
 * Cursors in `localStorage` under `prefix + room`, so a reloaded page
 * resumes where it stopped. A value that is not a seq reads as no cursor
 * (live only) rather than failing; a full or disabled storage keeps working
 * from memory.
 */
export function localStorageCursors(options: LocalStorageCursorsOptions = {}): CursorStore {
  const prefix = options.prefix ?? "rowcast:cursor:";
  const storage = options.storage ?? (globalThis as { localStorage?: CursorStorage }).localStorage;
  if (!storage) throw new Error("localStorageCursors: no localStorage here; pass `storage`");
  const fallback = memoryCursors();
  return {
    get(room) {
      const text = storage.getItem(prefix + room);
      const stored = text === null ? NaN : Number(text);
      const remembered = fallback.get(room);
      if (!Number.isSafeInteger(stored) || stored < 0) return remembered;
      return remembered === undefined ? stored : Math.max(stored, remembered);
    },
    set(room, seq) {
      fallback.set(room, seq);
      try {
        storage.setItem(prefix + room, String(seq));
      } catch {
        // Quota exceeded or storage disabled: the in-memory cursor still holds.
      }
    },
  };
}
