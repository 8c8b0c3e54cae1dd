// prom-client's metric classes, each from its own module (lib/*.js, which have no typings of their own): the
// package's index also loads its Pushgateway, and with it node:http, node:https and node:tls, which the agent
// never uses. The session threads load these modules too (worker-services/metrics-proxy.ts): through the index
// each thread compiled the TLS and HTTPS modules at start and held them.
declare module 'prom-client/lib/counter.js' {
  import { Counter } from 'prom-client';

  export default Counter;
}

declare module 'prom-client/lib/gauge.js' {
  import { Gauge } from 'prom-client';

  export default Gauge;
}

declare module 'prom-client/lib/registry.js' {
  import { Registry } from 'prom-client';

  export default Registry;
}
