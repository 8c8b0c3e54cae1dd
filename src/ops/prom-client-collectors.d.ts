// prom-client's default collectors, one per module (lib/metrics/*.js), have no typings of their own
// (process-metrics.ts calls them one by one). Each registers its metrics on the registry given.
declare module 'prom-client/lib/metrics/*.js' {
  import type { Registry } from 'prom-client';

  const register: (registry: Registry, config: Record<string, never>) => void;
  export default register;
}
