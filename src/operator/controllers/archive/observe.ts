// Reading a cluster's binlog archive for the operator's seed planning: every
// server's complete binlogs, read by src/pitr/bridge.ts's readArchiveChains
// through the operator's index cache, so a slave that waits to be
// provisioned (one reconcile about every 15 s) reads an index object only
// when the listing shows it new or changed. The listings are made each time:
// they decide what exists, and a listing or read that fails throws (a fault,
// never an empty archive, never a bridge chosen on part of it).
import { readArchiveChains, type ArchiveChain } from "../../../pitr/bridge.js";
import type { ArchiveIndexCache } from "../../../pitr/archive-index-cache.js";
import type { Repository } from "../../../storage/repository.js";

export function observeArchiveChains(repo: Repository, cache: ArchiveIndexCache): Promise<ArchiveChain[]> {
  return readArchiveChains(repo, cache);
}
