// A command's main promise that never settles (a wait for an event that can no
// longer come) ends the process as soon as nothing else keeps Node's event
// loop alive, and Node then exits with code 0: silently, as if the command had
// succeeded. A restore that did that would pass for done. This turns that exit
// into exit 1 with one line.

/** Make the process exit 1, with one line on stderr, if it is about to exit 0 while `main` has not settled. */
export function failIfUnsettled(main: Promise<unknown>, name: string): void {
  let settled = false;
  const done = (): void => {
    settled = true;
  };
  main.then(done, done);
  process.on("exit", (code) => {
    if (settled || code !== 0) return;
    process.stderr.write(`${name}: internal error: the command stopped before it finished (it waited for something that can no longer happen); what it did is not complete\n`);
    process.exitCode = 1;
  });
}
