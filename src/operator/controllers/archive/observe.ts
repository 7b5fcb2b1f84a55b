// Reading a cluster's binlog archive for the operator's seed planning: every
// server's complete binlogs, as src/pitr/bridge.ts's readArchiveChains reads
// them, but through the operator's index cache, so a slave that waits to be
// provisioned (one reconcile about every 15 s) reads an index object only
// when the listing shows it new or changed. The listings are made each time:
// they decide what exists, and a listing or read that fails throws (a fault,
// never an empty archive, never a bridge chosen on part of it).
import { archiveChainOf, type ArchiveChain } from "../../../pitr/bridge.js";
import { archivedServers, readServerArchive } from "../../../pitr/archive.js";
import type { ArchiveIndexCache } from "../../../pitr/archive-index-cache.js";
import type { Repository } from "../../../storage/repository.js";

export async function observeArchiveChains(repo: Repository, cache: ArchiveIndexCache): Promise<ArchiveChain[]> {
  const out: ArchiveChain[] = [];
  for (const sid of await archivedServers(repo.store, repo.cluster)) {
    out.push(archiveChainOf(sid, `${repo.where}/binlogs/${sid}`, await readServerArchive(repo.store, repo.cluster, sid, cache)));
  }
  return out;
}
