// AgentMetrics on its own: the histogram's cumulative buckets, the handshake result a session's end implies,
// label hygiene (unknown API paths become "other"), gauges absent until known, egress decisions.
import { describe, expect, it, vi } from 'vitest';
import { AgentMetrics, handshakeResult, recordEgressDecision, setCurrentMetrics, type ExchangeFacts } from '../../src/ops/metrics.ts';

const stats = (framesIn: number) => ({ framesIn, framesOut: 0, data: 0, streams: 0, attestations: 0, controls: 0, refused: 0 });
const fresh = (): AgentMetrics => new AgentMetrics({ mode: 'http', version: 't', processMetrics: false });
const lines = async (m: AgentMetrics, prefix: string): Promise<string[]> => (await m.metrics()).split('\n').filter((l) => l.startsWith(prefix));

describe('AgentMetrics', () => {
  it('request durations land in cumulative buckets with +Inf, sum and count', async () => {
    const m = fresh();
    // A fixed clock: the durations are exactly these (a loaded machine once added enough between the exchange's
    // start and its observation to move 0.2 ms past the 0.5 ms bucket).
    const now = vi.spyOn(performance, 'now').mockReturnValue(1_000_000);
    const ex = (seconds: number): ExchangeFacts => ({ started: 1_000_000 - seconds * 1000, sentStatus: 200, bytesIn: 0, bytesOut: 0, decryptedFields: 0, errorCode: undefined });
    for (const s of [0.0002, 0.003, 0.2, 120]) m.observeExchange(ex(s));
    now.mockRestore();
    const b = await lines(m, 'enclave_agent_request_duration_seconds_bucket');
    expect(b).toContain('enclave_agent_request_duration_seconds_bucket{le="0.0005"} 1');
    expect(b).toContain('enclave_agent_request_duration_seconds_bucket{le="0.005"} 2');
    expect(b).toContain('enclave_agent_request_duration_seconds_bucket{le="60"} 3');
    expect(b).toContain('enclave_agent_request_duration_seconds_bucket{le="+Inf"} 4');
    expect(await lines(m, 'enclave_agent_request_duration_seconds_count')).toEqual(['enclave_agent_request_duration_seconds_count 4']);
  });

  it('a summary record of abandoned requests counts every request it stands for, each by its own status', async () => {
    const m = fresh();
    const ex = (over: Partial<ExchangeFacts>): ExchangeFacts => ({ started: performance.now(), sentStatus: 0, bytesIn: 0, bytesOut: 0, decryptedFields: 0, errorCode: 'CLIENT_GONE', ...over });
    m.observeExchange(ex({})); // the client left mid-exchange: it ran
    m.observeExchange(ex({ abandoned: { requests: 1, outcomes: [{ status: 0, error: 'CLIENT_GONE', requests: 1 }] } }));
    // 31 folded into one record: 30 never answered, the last one answered 400 (a parse error in its body) while it waited.
    const outcomes = [
      { status: 0, error: 'CLIENT_GONE', requests: 30 },
      { status: 400, error: 'HTTP_BAD_REQUEST', requests: 1 },
    ];
    m.observeExchange(ex({ abandoned: { requests: 31, outcomes } }));
    m.observeExchange(ex({ sentStatus: 200, errorCode: undefined }));
    const l = await lines(m, 'enclave_agent_requests_total');
    expect(l).toContain('enclave_agent_requests_total{mode="http",status_class="none"} 32');
    expect(l).toContain('enclave_agent_requests_total{mode="http",status_class="4xx"} 1');
    expect(l).toContain('enclave_agent_requests_total{mode="http",status_class="2xx"} 1');
    // The abandoned ones never ran: no duration of theirs; counted apart, so requests = durations + abandoned.
    expect(await lines(m, 'enclave_agent_request_duration_seconds_count')).toEqual(['enclave_agent_request_duration_seconds_count 2']);
    expect(await lines(m, 'enclave_agent_requests_abandoned_total')).toEqual(['enclave_agent_requests_abandoned_total 32']);
  });

  it('the handshake result a session end implies', () => {
    expect(handshakeResult({ reason: 'handshake-timeout', stats: stats(0) })).toBe('timeout');
    expect(handshakeResult({ reason: 'handshake-failed', stats: stats(0) })).toBe('failed');
    expect(handshakeResult({ reason: 'proxy-header', stats: stats(0) })).toBe('failed');
    expect(handshakeResult({ reason: 'idle', stats: stats(0) })).toBe('ok');
    expect(handshakeResult({ reason: 'client-closed', stats: stats(3) })).toBe('ok');
    expect(handshakeResult({ reason: 'client-closed', stats: stats(0) })).toBeNull();
  });

  it('keeps API paths out of labels unless they are known routes', async () => {
    const m = fresh();
    m.apiRequest('/decrypt', 422);
    m.apiRequest('/decrypt/../../etc/passwd', 404);
    const l = await lines(m, 'enclave_agent_api_requests_total');
    expect(l).toEqual(['enclave_agent_api_requests_total{route="/decrypt",status_class="4xx"} 1', 'enclave_agent_api_requests_total{route="other",status_class="4xx"} 1']);
  });

  it('reads the gauges from their sources at scrape time', async () => {
    const m = fresh();
    let queued = 0;
    m.sources = { outputQueuedBytes: () => queued, sessionsOpen: () => ({ public: 3, control: 1 }), handshakesQueued: () => 2 };
    expect(await lines(m, 'enclave_agent_output_queued_bytes')).toEqual(['enclave_agent_output_queued_bytes 0']);
    queued = 65_536;
    expect(await lines(m, 'enclave_agent_output_queued_bytes')).toEqual(['enclave_agent_output_queued_bytes 65536']);
    expect(await lines(m, 'enclave_agent_sessions_open')).toEqual(['enclave_agent_sessions_open{channel="public"} 3', 'enclave_agent_sessions_open{channel="control"} 1']);
    expect(await lines(m, 'enclave_agent_handshakes_queued')).toEqual(['enclave_agent_handshakes_queued 2']);
  });

  it('counts dropped log lines of the host sink and of the session threads in one counter', async () => {
    const m = fresh();
    expect(await lines(m, 'enclave_agent_log_records_dropped_total')).toEqual(['enclave_agent_log_records_dropped_total 0']);
    m.sources = { logStream: () => ({ dropped: 3, queuedBytes: 0 }), workerLogDropped: () => 40 };
    expect(await lines(m, 'enclave_agent_log_records_dropped_total')).toEqual(['enclave_agent_log_records_dropped_total 43']);
    m.sources = { workerLogDropped: () => 41 }; // [log] sink = "file": no host stream, the threads' drops still count
    expect(await lines(m, 'enclave_agent_log_records_dropped_total')).toEqual(['enclave_agent_log_records_dropped_total 41']);
  });

  it('counts streams the stall watch reset, from the responders', async () => {
    const m = fresh();
    expect(await lines(m, 'enclave_agent_stream_app_stalls_total')).toEqual(['enclave_agent_stream_app_stalls_total 0']);
    m.sources = { streamAppStalls: () => 5 };
    expect(await lines(m, 'enclave_agent_stream_app_stalls_total')).toEqual(['enclave_agent_stream_app_stalls_total 5']);
  });

  it('leaves app_up and clock drift out until known', async () => {
    const m = fresh();
    expect(await lines(m, 'enclave_agent_app_up')).toEqual([]);
    expect(await lines(m, 'enclave_agent_clock_drift_seconds')).toEqual([]);
    m.sources.appUp = () => 'down';
    m.clockSample('ok', -1500);
    expect(await lines(m, 'enclave_agent_app_up')).toEqual(['enclave_agent_app_up 0']);
    expect(await lines(m, 'enclave_agent_clock_drift_seconds')).toEqual(['enclave_agent_clock_drift_seconds -1.5']);
  });

  it('recordEgressDecision counts on the current runtime\'s metrics, and is a no-op without one', async () => {
    const m = fresh();
    recordEgressDecision('denied');
    setCurrentMetrics(m);
    try {
      recordEgressDecision('allowed');
      recordEgressDecision('denied');
      recordEgressDecision('denied');
      recordEgressDecision('busy');
    } finally {
      setCurrentMetrics(null);
    }
    recordEgressDecision('allowed');
    const l = await lines(m, 'enclave_agent_egress_decisions_total');
    expect(l).toContain('enclave_agent_egress_decisions_total{outcome="allowed"} 1');
    expect(l).toContain('enclave_agent_egress_decisions_total{outcome="denied"} 2');
    expect(l).toContain('enclave_agent_egress_decisions_total{outcome="busy"} 1');
  });
});
