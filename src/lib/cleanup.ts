// The scaffolding every backup run shares: a stack of undo steps (close the
// control connection, remove the credentials file, restart the replication
// the run stopped), and the run's outcome, a promise the agent awaits only
// after it has consumed the stream, that undoes the stack whatever happens.

/** Undo steps of a run, undone in reverse order of registration. */
export type CleanupStack = (() => Promise<void>)[];

/** Undo the stack, last step first, and empty it (so that a second call does nothing). */
export async function runCleanup(stack: CleanupStack): Promise<void> {
  for (const fn of stack.reverse()) await fn();
  stack.length = 0;
}

/**
 * The outcome of a started run: `finish` (which awaits the tool and builds
 * the outcome), then the stack undone whether it worked or not. Pre-caught:
 * a failure is never unhandled before the agent awaits it.
 */
export function settleOutcome<T>(stack: CleanupStack, finish: () => Promise<T>): Promise<T> {
  const outcome = (async () => {
    try {
      return await finish();
    } finally {
      await runCleanup(stack);
    }
  })();
  outcome.catch(() => undefined);
  return outcome;
}

/** `start`, with the stack undone when it throws (a run that never started leaves nothing behind). */
export async function undoOnFailure<T>(stack: CleanupStack, start: () => T | Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (err) {
    await runCleanup(stack);
    throw err;
  }
}
