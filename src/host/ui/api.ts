// The page's calls to its own server (same origin; the session cookie, when a token is needed, rides along).
import type { EnclaveInfo } from '../activity-enclave.ts';
import type { OpsSnapshot } from '../activity-ops.ts';
import type { ActivityDetail, ListResult, TrafficResult } from '../activity-queries.ts';

export class Unauthorized extends Error {}

export interface StatusReply {
  token: boolean;
  store: { rows: number; inserted: number; dropped: number; rejected: number; expired: number; pending: number; retainDays: number; retainRows: number };
  sink: { lines?: number; invalid?: number; oversized?: number; connections?: number; refused?: number; foreignPeers?: number; webRequests?: number; silent?: number } | null;
  live: { clients: number; missedBatches: number; refused?: number };
}

async function get<T>(path: string): Promise<T> {
  const res = await fetch(path, { credentials: 'same-origin', cache: 'no-store' });
  if (res.status === 401) throw new Unauthorized();
  const body = (await res.json()) as T & { error?: { message: string } };
  if (!res.ok) throw new Error(body.error?.message ?? `HTTP ${res.status}`);
  return body;
}

export const api = {
  status: () => get<StatusReply>('/api/status'),
  records: (params: URLSearchParams) => get<ListResult>(`/api/records?${params.toString()}`),
  record: (id: number) => get<ActivityDetail>(`/api/records/${id}`),
  traffic: (from: number, to: number, buckets: number) => get<TrafficResult>(`/api/traffic?from=${from}&to=${to}&buckets=${buckets}`),
  enclave: () => get<EnclaveInfo & { uptimeS: number | null }>('/api/enclave'),
  ops: () => get<OpsSnapshot>('/api/ops'),
  async login(token: string): Promise<boolean> {
    const res = await fetch('/api/login', { method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }) });
    return res.ok;
  },
};
