/**
 * Application callbacks. An exception thrown by one is rethrown on its own
 * task, so it shows up as an uncaught error but never stops the delivery of
 * the frames after it or the other callbacks of the same frame.
 */

/** Calls `callback`, rethrowing what it throws outside the current call stack. */
export function callSafely<A extends unknown[]>(callback: ((...args: A) => void) | undefined, ...args: A): void {
  if (!callback) return;
  try {
    callback(...args);
  } catch (error) {
    setTimeout(() => {
      throw error;
    }, 0);
  }
}

/** A set of callbacks for one kind of notification. */
export class Listeners<T> {
  private readonly callbacks = new Set<(value: T) => void>();

  /** Adds a callback; returns the function that removes it. */
  add(callback: (value: T) => void): () => void {
    this.callbacks.add(callback);
    return () => this.callbacks.delete(callback);
  }

  delete(callback: (value: T) => void): void {
    this.callbacks.delete(callback);
  }

  emit(value: T): void {
    for (const callback of [...this.callbacks]) callSafely(callback, value);
  }

  clear(): void {
    this.callbacks.clear();
  }
}
