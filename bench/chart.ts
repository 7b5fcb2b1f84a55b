// An SVG bar chart of benchmark ratios (each row's time ÷ its table's
// baseline; a dashed line at 1.0×). bench/run.ts writes one per run
// (bench/results/ratios-latest.svg); run alone, it charts a report:
//   tsx bench/chart.ts bench/results/latest.md OUT.svg ["TITLE"]
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";

export interface ChartSection {
  title: string;
  baseline: string;
  /** Each bar's ratio; `label` (e.g. "142 MB") is printed instead of the ratio when given. */
  bars: { name: string; ratio: number; label?: string }[];
}

const xmlText = (s: string): string => s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
const fix = (n: number, d: number): string => n.toFixed(d);

export function ratioChart(title: string, sections: ChartSection[]): string {
  const items: ({ kind: "head"; text: string } | { kind: "bar"; text: string; ratio: number; label?: string })[] = [];
  for (const s of sections) {
    if (s.bars.length === 0) continue;
    items.push({ kind: "head", text: `${s.title} (vs ${s.baseline})` });
    for (const b of s.bars) items.push({ kind: "bar", text: b.name, ratio: b.ratio, ...(b.label !== undefined ? { label: b.label } : {}) });
  }
  const maxRatio = Math.max(2, ...items.map((i) => (i.kind === "bar" ? i.ratio : 0)));
  const labelW = 470;
  const barW = 330;
  const rowH = 22;
  const width = labelW + barW + 70;
  const height = 40 + items.length * rowH + 24;
  const x = (ratio: number): number => labelW + (ratio / maxRatio) * barW;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">${xmlText(title)}</text>`,
  ];
  items.forEach((it, i) => {
    const y = 40 + i * rowH;
    if (it.kind === "head") {
      out.push(`<text x="10" y="${y + 15}" font-weight="bold">${xmlText(it.text)}</text>`);
      return;
    }
    const fill = it.ratio <= 1 ? "#2e7d32" : "#c62828";
    out.push(`<text x="20" y="${y + 15}">${xmlText(it.text.length > 70 ? `${it.text.slice(0, 68)}…` : it.text)}</text>`);
    out.push(`<rect x="${labelW}" y="${y + 4}" width="${fix(x(it.ratio) - labelW, 1)}" height="${rowH - 8}" fill="${fill}"/>`);
    out.push(`<text x="${fix(x(it.ratio) + 5, 1)}" y="${y + 15}">${xmlText(it.label ?? `${fix(it.ratio, 2)}×`)}</text>`);
  });
  out.push(`<line x1="${fix(x(1), 1)}" y1="32" x2="${fix(x(1), 1)}" y2="${height - 14}" stroke="black" stroke-dasharray="4 3"/>`);
  out.push(`<text x="${fix(x(1) - 12, 1)}" y="${height - 3}" font-size="10">1.0×</text>`);
  out.push("</svg>", "");
  return out.join("\n");
}

/**
 * The sections of a bench report (bench/results/latest.md): each "## " table's rows and their
 * "Time vs baseline" ratio, and one more section of every row's "Agent peak RSS MB" against the 250 MB target.
 */
export function sectionsFromReport(md: string): ChartSection[] {
  const sections: ChartSection[] = [];
  const rss: ChartSection = { title: "Agent peak RSS", baseline: "the 250 MB target", bars: [] };
  let current: ChartSection | undefined;
  let ratioCol = -1;
  let rssCol = -1;
  for (const line of md.split("\n")) {
    if (line.startsWith("## ")) {
      current = { title: line.slice(3).replace(/\s*\(.*$/, ""), baseline: "baseline", bars: [] };
      sections.push(current);
      ratioCol = -1;
      rssCol = -1;
      continue;
    }
    if (!current || !line.startsWith("|")) continue;
    const cells = line.split(/(?<!\\)\|/).slice(1, -1).map((c) => c.trim().replaceAll("\\|", "|"));
    if (cells[0] === "Method") {
      ratioCol = cells.findIndex((c) => c.startsWith("Time vs baseline"));
      rssCol = cells.findIndex((c) => c.startsWith("Agent peak RSS"));
      continue;
    }
    if (ratioCol < 0 || cells[0]?.startsWith("---")) continue;
    const name = cells[0] ?? "";
    const mb = rssCol >= 0 ? /^([\d,.]+)/.exec(cells[rssCol] ?? "") : null;
    if (mb?.[1]) {
      const v = Number(mb[1].replaceAll(",", ""));
      rss.bars.push({ name, ratio: v / 250, label: `${v.toFixed(0)} MB` });
    }
    if (name.includes("**(baseline)**")) {
      current.baseline = name.replace(" **(baseline)**", "");
      continue;
    }
    const m = /^([\d.]+)×/.exec(cells[ratioCol] ?? "");
    if (m?.[1]) current.bars.push({ name, ratio: Number(m[1]) });
  }
  return [...sections, rss];
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(import.meta.filename)) {
  const [input, output, title] = process.argv.slice(2);
  if (!input || !output) {
    console.error("usage: tsx bench/chart.ts REPORT.md OUT.svg [TITLE]");
    process.exit(2);
  }
  const md = await readFile(input, "utf8");
  await writeFile(output, ratioChart(title ?? "replicator ÷ the plain pipeline", sectionsFromReport(md)));
  console.error(`wrote ${output}`);
}
