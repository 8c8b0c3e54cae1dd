// Stage: request id. Every request gets a fresh id (a client-supplied value in the same header is replaced,
// so the id in the transaction log is always ours); the app receives it in the request and the client gets
// it back in the response, so a support ticket can point at one log record.
import { randomUUID } from 'node:crypto';
import type { Stage } from '../exchange.ts';
import { removeUnderscoreAliases, setHeader } from '../headers.ts';

export const DEFAULT_REQUEST_ID_HEADER = 'x-request-id';

export function requestIdStage(opts: { header?: string } = {}): Stage {
  const header = (opts.header ?? DEFAULT_REQUEST_ID_HEADER).toLowerCase();
  const aliases: ReadonlySet<string> = new Set([header]);
  return (ex, next) => {
    ex.requestId = randomUUID();
    setHeader(ex.upstreamHeaders, header, ex.requestId);
    removeUnderscoreAliases(ex.upstreamHeaders, aliases); // headers.ts: a client's X_Request_Id is not passed on
    ex.responseHeaders.push(header, ex.requestId);
    return next();
  };
}
