import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { buildAllCrds } from "./crds.js";
import { backupSpecSchema, restoreSpecSchema, validateSpec } from "./v1alpha1.js";

describe("crds/", () => {
  it("matches the zod schemas (run `npm run gen:crds` after changing src/api)", () => {
    for (const { file, crd } of buildAllCrds()) {
      const onDisk = parse(readFileSync(path.resolve(import.meta.dirname, "../../crds", file), "utf8")) as unknown;
      expect(onDisk, file).toEqual(crd);
    }
  });

  it("has no constructs a structural schema forbids", () => {
    const text = JSON.stringify(buildAllCrds());
    expect(text).not.toContain("$schema");
    expect(text).not.toContain("propertyNames");
    expect(text).not.toContain('"additionalProperties":false');
  });
});

describe("validateSpec", () => {
  it("fills defaults", () => {
    const r = validateSpec(backupSpecSchema, { source: { statefulSet: "db", credentialsSecret: { name: "db-creds" } } });
    expect(r).toMatchObject({ ok: true, value: { repository: "default", source: { role: "master", port: 3306, credentialsSecret: { userKey: "username" } } } });
  });

  it("reports the path of the first problem", () => {
    expect(validateSpec(restoreSpecSchema, { target: { pod: "db-2", credentialsSecret: { name: "x" } } })).toEqual({
      ok: false,
      message: "spec.cluster: Invalid input: expected string, received undefined",
    });
    expect(validateSpec(backupSpecSchema, { source: { pod: "DB_0", credentialsSecret: { name: "x" } } })).toMatchObject({
      ok: false,
      message: "spec.source.pod: must be a DNS label: lowercase letters, digits and '-'",
    });
  });
});
