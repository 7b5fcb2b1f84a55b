import { describe, expect, it } from "vitest";
import { secretProblem } from "./shared.js";

describe("secretProblem", () => {
  const needs = [
    { key: "username", field: "spec.replicateFrom.credentialsSecret.userKey" },
    { key: "password", field: "spec.replicateFrom.credentialsSecret.passwordKey" },
  ];
  it("names the Secret, the missing key, the field that asks for it, the keys it has (never values) and the fix", () => {
    expect(secretProblem("db-credentials", ["password", "replication-username", "replication-password"], needs, "spec.replicateFrom.credentialsSecret", "Add the key.")).toBe(
      'Secret db-credentials (spec.replicateFrom.credentialsSecret) has no key "username" (spec.replicateFrom.credentialsSecret.userKey); its keys are password, replication-password, replication-username. Add the key.',
    );
    expect(secretProblem("db-replication", undefined, needs, "spec.replicateFrom.credentialsSecret", "x")).toBe(
      "Secret db-replication (spec.replicateFrom.credentialsSecret) not found; create it with the keys username and password",
    );
    expect(secretProblem("ok", ["username", "password"], needs, "w", "x")).toBeUndefined();
  });
});
