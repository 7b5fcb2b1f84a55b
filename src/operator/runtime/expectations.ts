// Expectations for created children, as client-go's ReplicaSet and Job
// controllers keep them: a reconcile that creates a child records it BEFORE
// the create call, under every key it must block (its owner; for a backup Job
// also the source pod), and no second child is created under those keys until
// the informer has seen the first, or the expectation timed out (a create
// whose watch event was lost must not block an owner forever).
//
// Recording before the call closes the window where two workers both decide
// from a cache that does not hold the first child yet; a failed create lowers
// the expectation again.
import { realClock, type Clock } from "./clock.js";

/** client-go's ExpectationsTimeout. */
export const DEFAULT_EXPECTATION_TIMEOUT_MS = 5 * 60_000;

interface Pending {
  keys: string[];
  at: number;
}

export class Expectations {
  /** child → the keys it blocks and when it was recorded. */
  private readonly children = new Map<string, Pending>();

  constructor(
    private readonly clock: Clock = realClock,
    private readonly timeoutMs = DEFAULT_EXPECTATION_TIMEOUT_MS,
  ) {}

  /** A child is about to be created: block `keys` until it is observed. */
  expectCreation(child: string, keys: string[]): void {
    this.children.set(child, { keys: [...keys], at: this.clock.now() });
  }

  /** The informer saw the child (added, updated or deleted): it no longer blocks anything. */
  observed(child: string): void {
    this.children.delete(child);
  }

  /** The create failed (not AlreadyExists): nothing is coming. */
  creationFailed(child: string): void {
    this.children.delete(child);
  }

  /** Children recorded under `key` and not yet observed (expired ones are dropped). */
  pending(key: string): string[] {
    const out: string[] = [];
    const now = this.clock.now();
    for (const [child, p] of this.children) {
      if (now - p.at >= this.timeoutMs) {
        this.children.delete(child);
        continue;
      }
      if (p.keys.includes(key)) out.push(child);
    }
    return out;
  }

  /** May the owner behind `key` act (create another child)? */
  satisfied(key: string): boolean {
    return this.pending(key).length === 0;
  }

  /** How long until the oldest pending child under `key` times out (0 when satisfied). */
  remainingMs(key: string): number {
    const now = this.clock.now();
    let min = 0;
    for (const p of this.children.values()) {
      if (!p.keys.includes(key)) continue;
      const left = this.timeoutMs - (now - p.at);
      if (left > 0 && (min === 0 || left < min)) min = left;
    }
    return min;
  }
}
