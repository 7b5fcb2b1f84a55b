// Writes crds/*.yaml from src/api (the zod schemas). `npm run gen:crds`.
import { writeFileSync } from "node:fs";
import path from "node:path";
import { stringify } from "yaml";
import { buildAllCrds } from "../src/api/crds.js";

const dir = path.resolve(import.meta.dirname, "../crds");
for (const { file, crd } of buildAllCrds()) {
  writeFileSync(path.join(dir, file), `# Generated from src/api/v1alpha1.ts by scripts/gen-crds.ts. Do not edit.\n${stringify(crd, { lineWidth: 0 })}`);
  console.log(`wrote crds/${file}`);
}
