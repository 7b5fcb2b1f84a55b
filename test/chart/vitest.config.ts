// The Helm chart and deploy/ tests on their own:
//   npx vitest run --config test/chart/vitest.config.ts
// chart.test.ts needs helm (hack/install-helm.sh); dry-run.test.ts also needs
// the control-plane binaries (hack/build-kube-tools.sh) and kubectl.
import path from "node:path";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    name: "chart",
    root: path.resolve(import.meta.dirname, "../.."),
    include: ["test/chart/**/*.test.ts"],
    environment: "node",
    // dry-run.test.ts starts etcd + kube-apiserver: keep files sequential.
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 180_000,
  },
});
