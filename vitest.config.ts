import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["src/**/*.test.ts"],
          environment: "node",
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          environment: "node",
          // Real servers (mariadbd, versitygw) are started per file; keep files
          // sequential so a 2-core machine is not oversubscribed.
          fileParallelism: false,
          testTimeout: 180_000,
          hookTimeout: 180_000,
        },
      },
      {
        test: {
          // The Kubernetes layer: a real kube-apiserver, controller manager and
          // etcd, the test kubelet, the operator process, MariaDB and S3.
          name: "cluster",
          include: ["test/chart/**/*.test.ts", "test/controlplane/**/*.test.ts", "test/e2e/**/*.test.ts"],
          environment: "node",
          fileParallelism: false,
          testTimeout: 300_000,
          hookTimeout: 600_000,
        },
      },
    ],
  },
});
