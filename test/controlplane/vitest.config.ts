// Control-plane tests (real etcd + kube-apiserver + kube-controller-manager
// and the test kubelet): `npx vitest run --config test/controlplane/vitest.config.ts`.
import path from "node:path";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    root: path.resolve(import.meta.dirname, "../.."),
    include: ["test/controlplane/**/*.test.ts"],
    environment: "node",
    // Each file starts its own control plane; one at a time.
    fileParallelism: false,
    testTimeout: 300_000,
    hookTimeout: 300_000,
  },
});
