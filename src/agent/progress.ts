// Byte counting for the data path, and a progress line on a TTY.
import { Transform } from "node:stream";
import { formatBytes } from "../storage/catalog.js";

export class ByteCounter extends Transform {
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null, data?: Buffer) => void): void {
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

export function formatDuration(ms: number): string {
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const mm = String(m).padStart(2, "0");
  const ss = String(sec).padStart(2, "0");
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

export function formatProgress(label: string, bytes: number, elapsedMs: number): string {
  const rate = elapsedMs > 0 ? (bytes / elapsedMs) * 1000 : 0;
  return `${label} ${formatBytes(bytes)}  ${formatBytes(Math.round(rate))}/s  ${formatDuration(elapsedMs)}`;
}

/** Redraws one status line on stderr while a TTY is attached; silent otherwise. */
export function startProgress(label: string, count: () => number, stream: NodeJS.WriteStream = process.stderr): () => void {
  if (!stream.isTTY) return () => undefined;
  const t0 = Date.now();
  const draw = (): void => {
    stream.write(`\r\x1b[2K${formatProgress(label, count(), Date.now() - t0)}`);
  };
  const timer = setInterval(draw, 500);
  timer.unref();
  return () => {
    clearInterval(timer);
    draw();
    stream.write("\n");
  };
}
