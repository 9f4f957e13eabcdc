/**
 * Builds the inspector page's script, which `rowcast dev` embeds in the
 * binary: one minified ESM file written to src/dev/inspector.js and
 * committed, so `cargo build` needs no node. `npm run build` runs this;
 * a unit test checks the committed file is what this build makes.
 */

import { build } from "esbuild";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** Where the committed bundle lives. */
export const OUTPUT = fileURLToPath(new URL("../../../src/dev/inspector.js", import.meta.url));

/** The bundle's text. */
export async function bundle() {
  const result = await build({
    entryPoints: [fileURLToPath(new URL("./inspector.ts", import.meta.url))],
    bundle: true,
    minify: true,
    write: false,
    format: "esm",
    target: "es2020",
    legalComments: "none",
    logLevel: "warning",
  });
  return result.outputFiles[0].text;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(OUTPUT, await bundle());
}
