import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", ".tools/", "coverage/", "hack/", "charts/", "deploy/", "test/fixtures/", "bench/results/"] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/switch-exhaustiveness-check": "error",
      "@typescript-eslint/restrict-template-expressions": ["error", { allowNumber: true }],
      "no-console": "error",
      "no-restricted-imports": [
        "error",
        {
          paths: [
            { name: "@kubernetes/client-node", message: "Only src/kube may import client-node." },
            { name: "node:child_process", message: "Start tools with spawnTool or captureTool (src/lib/exec.ts), the one runner." },
            { name: "child_process", message: "Start tools with spawnTool or captureTool (src/lib/exec.ts), the one runner." },
            { name: "execa", message: "Start tools with spawnTool or captureTool (src/lib/exec.ts), the one runner." },
          ],
          patterns: [
            { group: ["@aws-sdk/*"], message: "Only src/storage/s3 may import the AWS SDK." },
          ],
        },
      ],
    },
  },
  { files: ["src/storage/s3/**"], rules: { "no-restricted-imports": "off" } },
  // The runner itself, the conformance kit's sandboxes (throw-away servers and docker, not the data path), and tests.
  { files: ["src/lib/exec.ts", "src/conformance/**", "**/*.test.ts"], rules: { "no-restricted-imports": "off" } },
  { files: ["src/kube/**"], rules: { "no-restricted-imports": "off" } },
  {
    files: ["src/cli/**", "test/**", "bench/**", "scripts/**"],
    rules: { "no-console": "off", "no-restricted-imports": "off" },
  },
  { files: ["**/*.test.ts", "test/**"], rules: { "@typescript-eslint/no-non-null-assertion": "off" } },
  { files: ["eslint.config.js"], ...tseslint.configs.disableTypeChecked },
);
