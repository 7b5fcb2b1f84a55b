// `replicator plugin-test COMMAND|IMAGE` and `replicator plugin-test --method NAME`:
// the conformance kit (src/conformance/kit.ts) from the command line.
// Exit codes: 0 every check passed, 1 a check failed, 2 bad usage (or no
// container engine for an IMAGE).
import { badInput } from "../lib/errors.js";
import { createLogger } from "../lib/log.js";
import { CONTRACT_VERSION } from "../plugins/exec/protocol.js";
import { formatCheck, formatSummary, knownBuiltins, runConformance } from "../conformance/kit.js";

export interface PluginTestArgs {
  positionals: string[];
  method: string | undefined;
  json: boolean;
  logLevel: string | undefined;
  out: (line: string) => void;
}

export async function pluginTest(a: PluginTestArgs): Promise<number> {
  if (a.positionals.length > 1) {
    throw badInput("InvalidArguments", `plugin-test takes one COMMAND or IMAGE (got ${String(a.positionals.length)}); a plugin is one executable, called with its subcommand`);
  }
  const subject = a.positionals[0];
  if (!subject && !a.method) {
    throw badInput("InvalidArguments", `plugin-test needs the plugin's COMMAND (or IMAGE), or --method NAME to test a built-in method (${knownBuiltins().join(", ")})`);
  }
  if (subject && a.method) {
    throw badInput("InvalidArguments", "give plugin-test a COMMAND/IMAGE or --method NAME, not both");
  }
  const abort = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    process.stderr.write(`\n${sig}: stopping the kit and removing its servers\n`);
    abort.abort(new Error(`interrupted by ${sig}`));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    if (!a.json) {
      a.out(`testing ${subject ? `plugin ${subject}` : `built-in method ${a.method ?? ""}`} against plugin contract ${String(CONTRACT_VERSION)} (throw-away servers on 127.0.0.1, a temp file:// repository)`);
    }
    const report = await runConformance({
      plugin: subject,
      builtin: subject ? undefined : a.method,
      log: createLogger({ level: a.logLevel }),
      signal: abort.signal,
      onCheck: a.json ? undefined : (c) => { a.out(formatCheck(c)); },
    });
    if (a.json) {
      a.out(JSON.stringify(report));
    } else {
      for (const n of report.notes) a.out(`note: ${n}`);
      a.out(formatSummary(report));
    }
    return report.ok ? 0 : 1;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}
