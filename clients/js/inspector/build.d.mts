/** Where the committed bundle lives (src/dev/inspector.js). */
export declare const OUTPUT: string;
/** The bundle's text. */
export declare function bundle(): Promise<string>;
