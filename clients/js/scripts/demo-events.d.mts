/** Where the committed file lives (src/demo/events.ts). */
export declare const OUTPUT: string;
/** What `rowcast types` prints for the built-in routes and the database at `databaseUrl`. */
export declare function declarations(bin: string, databaseUrl: string): string;
/** The event names of the `RowcastEvents` interface in `text`. */
export declare function eventNames(text: string): string[];
/** The file's text for `rowcast types`' output. */
export declare function demoEvents(text: string): string;
