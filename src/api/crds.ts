// Build CustomResourceDefinitions from the zod schemas, as structural
// OpenAPI v3 schemas (no $schema, propertyNames or additionalProperties:false;
// unknown maps keep their values). Pure: scripts/gen-crds.ts writes them.
import { z } from "zod";
import { GROUP, KINDS, VERSION, type KindInfo } from "./v1alpha1.js";

type Json = Record<string, unknown>;

function structural(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(structural);
  if (node === null || typeof node !== "object") return node;
  const out: Json = {};
  for (const [k, v] of Object.entries(node as Json)) {
    if (k === "$schema" || k === "propertyNames") continue;
    if (k === "maximum" && v === Number.MAX_SAFE_INTEGER) continue;
    if (k === "minimum" && v === Number.MIN_SAFE_INTEGER) continue;
    if (k === "additionalProperties") {
      if (v === false) continue;
      if (v && typeof v === "object" && Object.keys(v).length === 0) {
        out["x-kubernetes-preserve-unknown-fields"] = true;
        continue;
      }
    }
    out[k] = structural(v);
  }
  return out;
}

function jsonSchema(schema: z.ZodType): Json {
  return structural(z.toJSONSchema(schema, { io: "input", unrepresentable: "any" })) as Json;
}

function addValidations(spec: Json, validations: KindInfo["validations"]): void {
  for (const [field, rules] of Object.entries(validations)) {
    let target: Json | undefined = spec;
    if (field) target = (spec.properties as Record<string, Json> | undefined)?.[field];
    if (target) target["x-kubernetes-validations"] = rules;
  }
}

export function buildCrd(k: KindInfo): Json {
  const spec = jsonSchema(k.spec);
  addValidations(spec, k.validations);
  const status = jsonSchema(k.status);
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: `${k.plural}.${GROUP}`, labels: { "app.kubernetes.io/name": "replicator-operator" } },
    spec: {
      group: GROUP,
      names: { kind: k.kind, listKind: `${k.kind}List`, plural: k.plural, singular: k.singular, shortNames: k.shortNames, categories: ["replicator"] },
      scope: "Namespaced",
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: k.printerColumns,
          schema: {
            openAPIV3Schema: {
              type: "object",
              required: ["spec"],
              properties: {
                apiVersion: { type: "string" },
                kind: { type: "string" },
                metadata: { type: "object" },
                spec,
                status,
              },
            },
          },
        },
      ],
    },
  };
}

export function buildAllCrds(): { file: string; crd: Json }[] {
  return KINDS.map((k) => ({ file: `${GROUP}_${k.plural}.yaml`, crd: buildCrd(k) }));
}
