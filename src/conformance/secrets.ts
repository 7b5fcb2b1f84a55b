// Watches every process's command line (/proc/*/cmdline, world-readable) for
// the kit's passwords while a method runs, about every 20 ms. Environments
// (/proc/*/environ, readable by the same user) are looked at less often and
// only reported as a note: MYSQL_PWD-style variables are weaker than a file,
// but not visible to other users.
import { readdir, readFile } from "node:fs/promises";

export interface SecretSighting {
  pid: number;
  /** The command line (or the variable's name), with each secret replaced by ****. */
  where: string;
  /** What the kit was doing. */
  phase: string;
  in: "cmdline" | "environ";
}

export class SecretWatcher {
  private readonly secrets: Buffer[];
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private stopped = true;
  private tick = 0;
  phase = "setup";
  scans = 0;
  readonly sightings: SecretSighting[] = [];
  private readonly seen = new Set<string>();

  constructor(
    secrets: string[],
    private readonly intervalMs = 20,
    private readonly ignorePids = new Set<number>([process.pid]),
  ) {
    this.secrets = secrets.filter((s) => s.length >= 6).map((s) => Buffer.from(s));
  }

  /** False where /proc is not there (not Linux): the check is skipped. */
  static async available(): Promise<boolean> {
    try {
      await readFile("/proc/self/cmdline");
      return true;
    } catch {
      return false;
    }
  }

  start(): void {
    this.stopped = false;
    const loop = async (): Promise<void> => {
      if (this.stopped) return;
      this.running = true;
      try {
        await this.scan(this.tick++ % 10 === 0);
      } finally {
        this.running = false;
      }
      if (!this.isStopped()) this.timer = setTimeout(() => { void loop(); }, this.intervalMs);
    };
    void loop();
  }

  private isStopped(): boolean {
    return this.stopped;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    while (this.running) await new Promise((r) => setTimeout(r, 5));
  }

  private mask(b: Buffer): string {
    let text = b.toString("utf8").replace(/\0+$/, "").replace(/\0/g, " ");
    for (const s of this.secrets) text = text.split(s.toString("utf8")).join("****");
    return text.length > 200 ? `${text.slice(0, 200)}…` : text;
  }

  private record(s: SecretSighting): void {
    const key = `${String(s.pid)}:${s.in}:${s.where}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.sightings.push(s);
  }

  private async scan(withEnviron: boolean): Promise<void> {
    let pids: string[];
    try {
      pids = (await readdir("/proc")).filter((n) => /^\d+$/.test(n));
    } catch {
      return;
    }
    this.scans++;
    await Promise.all(
      pids.map(async (p) => {
        const pid = Number(p);
        if (this.ignorePids.has(pid)) return;
        try {
          const cmd = await readFile(`/proc/${p}/cmdline`);
          if (this.secrets.some((s) => cmd.includes(s))) this.record({ pid, where: this.mask(cmd), phase: this.phase, in: "cmdline" });
        } catch {
          // gone
        }
        if (!withEnviron) return;
        try {
          const env = await readFile(`/proc/${p}/environ`);
          if (this.secrets.some((s) => env.includes(s))) {
            const names = env
              .toString("utf8")
              .split("\0")
              .filter((kv) => this.secrets.some((s) => kv.includes(s.toString("utf8"))))
              .map((kv) => kv.split("=")[0] ?? "?");
            let cmd = "";
            try {
              cmd = this.mask(await readFile(`/proc/${p}/cmdline`));
            } catch {
              // gone
            }
            this.record({ pid, where: `${names.join(", ")} in the environment of \`${cmd}\``, phase: this.phase, in: "environ" });
          }
        } catch {
          // gone, or not ours
        }
      }),
    );
  }
}
