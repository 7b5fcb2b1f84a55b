// Two-level errors, in the manner of execa: a one-line `userMessage` that a
// person can act on (it goes to a condition or the CLI's stderr), and a
// `cause`/`detail` with the technical specifics that goes to the log.

export type ErrorKind =
  /** The input is wrong; retrying will not help (CLI exit 2, plugin exit 2). */
  | "BadInput"
  /** The operation failed; a retry may succeed (exit 1). */
  | "Failed";

export class ReplicatorError extends Error {
  readonly kind: ErrorKind;
  /** A PascalCase reason, usable as a condition reason (e.g. StorageUnreachable). */
  readonly reason: string;
  readonly detail: string | undefined;

  constructor(
    kind: ErrorKind,
    reason: string,
    userMessage: string,
    opts: { cause?: unknown; detail?: string } = {},
  ) {
    super(userMessage, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "ReplicatorError";
    this.kind = kind;
    this.reason = reason;
    this.detail = opts.detail;
  }

  get userMessage(): string {
    return this.message;
  }
}

export function badInput(reason: string, message: string, opts?: { cause?: unknown; detail?: string }): ReplicatorError {
  return new ReplicatorError("BadInput", reason, message, opts);
}

export function failed(reason: string, message: string, opts?: { cause?: unknown; detail?: string }): ReplicatorError {
  return new ReplicatorError("Failed", reason, message, opts);
}

export function isReplicatorError(err: unknown): err is ReplicatorError {
  return err instanceof ReplicatorError;
}

/** The exit code the CLI and plugin contract use for an error. */
export function exitCodeFor(err: unknown): number {
  return isReplicatorError(err) && err.kind === "BadInput" ? 2 : 1;
}

/** A one-line message for any error; unknown errors keep their own message. */
export function oneLine(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split("\n").map((s) => s.trim()).filter(Boolean).join(" ");
}

/** Keep the last `max` characters of a stderr stream, on line boundaries. */
export function tail(text: string, max = 2000): string {
  const t = text.trim();
  if (t.length <= max) return t;
  const cut = t.slice(t.length - max);
  const nl = cut.indexOf("\n");
  return nl >= 0 ? cut.slice(nl + 1) : cut;
}

/** Stream errors that only say another stream went away first (destroyed, closed early, a broken pipe, an abort). */
export function isStreamEcho(err: unknown): boolean {
  const code = (err as { code?: string } | undefined)?.code;
  return code === "ERR_STREAM_DESTROYED" || code === "ERR_STREAM_PREMATURE_CLOSE" || code === "EPIPE" || (err as Error | undefined)?.name === "AbortError";
}
