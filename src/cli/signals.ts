// Shared by the long-running host-side commands (bridge, logs): wait for Ctrl-C or a stop from the supervisor.

/** Resolves on the first SIGINT or SIGTERM, then removes its handlers (a second signal gets Node's default). */
export function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    const onSignal = (): void => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      resolve();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}
