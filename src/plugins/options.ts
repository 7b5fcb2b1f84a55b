// Checks shared by the methods' option parsers.
import { badInput } from "../lib/errors.js";

/** A true/false method option (a YAML boolean or the strings "true"/"false"); `fallback` when unset. */
export function booleanOption(o: Record<string, unknown>, name: string, fallback: boolean): boolean {
  const v = o[name];
  if (v === undefined) return fallback;
  if (v !== true && v !== false && v !== "true" && v !== "false") throw badInput("InvalidOption", `${name} must be true or false (got ${JSON.stringify(v)})`);
  return v === true || v === "true";
}
