import { defineConfig } from "vitest/config";

// Three tiers: unit tests over a fake socket (fake timers, no I/O), with
// the type-level tests beside them;
// integration tests against the real relay and Postgres; one browser test
// in real Chromium. `npm test` runs all three.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
          environment: "node",
          // The type-level tests (`*.test-d.ts`) are checked by tsc, never run.
          typecheck: { enabled: true, include: ["test/unit/**/*.test-d.ts"], tsconfig: "./tsconfig.types.json" },
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          environment: "node",
          testTimeout: 90_000,
          hookTimeout: 60_000,
        },
      },
      {
        test: {
          name: "browser",
          include: ["test/browser/**/*.test.ts"],
          environment: "node",
          testTimeout: 120_000,
          hookTimeout: 600_000,
        },
      },
    ],
  },
});
