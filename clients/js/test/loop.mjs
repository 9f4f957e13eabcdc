// Runs the integration suite N times in a row (default 10), stopping at the
// first failure, and prints how long each run and the whole loop took.
import { spawnSync } from "node:child_process";

const runs = Number(process.argv[2] ?? 10);
const vitest = new URL("../node_modules/vitest/vitest.mjs", import.meta.url).pathname;
const started = performance.now();
for (let run = 1; run <= runs; run++) {
  const start = performance.now();
  const result = spawnSync(process.execPath, [vitest, "run", "--project", "integration"], { stdio: "inherit" });
  const seconds = ((performance.now() - start) / 1000).toFixed(1);
  if (result.status !== 0) {
    console.error(`test:loop: run ${run}/${runs} failed after ${seconds} s`);
    process.exit(1);
  }
  console.log(`test:loop: run ${run}/${runs} passed in ${seconds} s`);
}
console.log(`test:loop: ${runs} runs passed in ${((performance.now() - started) / 1000).toFixed(1)} s`);
