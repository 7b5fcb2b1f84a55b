// Pure: libpq connection strings and postgresql.conf lines, quoted the way
// pg_basebackup -R writes them.

/** A conninfo value: single-quoted, with ' and \ backslash-escaped. */
export function quoteConninfoValue(v: string): string {
  return `'${v.replace(/[\\']/g, (c) => `\\${c}`)}'`;
}

/** `key='value' key='value'`, skipping undefined values, in the given order. */
export function buildConninfo(params: [string, string | number | undefined][]): string {
  return params
    .filter((p): p is [string, string | number] => p[1] !== undefined)
    .map(([k, v]) => `${k}=${quoteConninfoValue(String(v))}`)
    .join(" ");
}

/** A postgresql.conf string value: single-quoted, with ' and \ doubled (as escape_quotes does). */
export function quoteConfValue(v: string): string {
  return `'${v.replace(/[\\']/g, (c) => c + c)}'`;
}

/** `name = 'value'`. */
export function confLine(name: string, value: string): string {
  if (!/^[a-z_][a-z0-9_.]*$/i.test(name)) throw new Error(`invalid setting name ${name}`);
  return `${name} = ${quoteConfValue(value)}`;
}
