// recordAbandonedRequests: the first MAX_ABANDONED_RECORDS requests get a record each, one more stands for the
// rest and keeps how many came to each outcome (status and error code), in a list of bounded length whatever
// the outcomes are.
import { describe, expect, it } from 'vitest';
import { MAX_ABANDONED_OUTCOMES, MAX_ABANDONED_RECORDS, recordAbandonedRequests, type AbandonedOutcome, type AbandonedSummary } from '../../src/http/abandoned-records.ts';

function records(outcomes: AbandonedOutcome[]): { request: number; summary: AbandonedSummary }[] {
  const out: { request: number; summary: AbandonedSummary }[] = [];
  recordAbandonedRequests(
    outcomes.keys(),
    (i) => outcomes[i]!,
    (request, summary) => out.push({ request, summary }),
  );
  return out;
}

const gone: AbandonedOutcome = { status: 0, error: 'CLIENT_GONE' };

describe('recordAbandonedRequests', () => {
  it('a record each for the first, then one with the rest counted by outcome', () => {
    const outcomes = [...Array<AbandonedOutcome>(30).fill(gone), { status: 400, error: 'HTTP_BAD_REQUEST' }];
    const r = records(outcomes);
    expect(r).toHaveLength(MAX_ABANDONED_RECORDS + 1);
    for (const x of r.slice(0, MAX_ABANDONED_RECORDS)) expect(x.summary).toEqual({ requests: 1, outcomes: [{ ...gone, requests: 1 }] });
    expect(r.at(-1)).toEqual({
      request: MAX_ABANDONED_RECORDS,
      summary: {
        requests: 31 - MAX_ABANDONED_RECORDS,
        outcomes: [
          { ...gone, requests: 30 - MAX_ABANDONED_RECORDS },
          { status: 400, error: 'HTTP_BAD_REQUEST', requests: 1 },
        ],
      },
    });
  });

  it('keeps the list bounded: past MAX_ABANDONED_OUTCOMES distinct ones, the rest by status class as OTHER', () => {
    const distinct = Array.from({ length: 1000 }, (_, i): AbandonedOutcome => ({ status: 400 + (i % 100), error: `CODE_${i}` }));
    const r = records([...Array<AbandonedOutcome>(MAX_ABANDONED_RECORDS).fill(gone), ...distinct, gone]);
    const summary = r.at(-1)!.summary;
    expect(summary.requests).toBe(1001);
    expect(summary.outcomes.length).toBeLessThanOrEqual(MAX_ABANDONED_OUTCOMES + 6);
    expect(summary.outcomes.reduce((n, o) => n + o.requests, 0)).toBe(1001);
    expect(summary.outcomes.slice(0, MAX_ABANDONED_OUTCOMES).map((o) => o.error)).toEqual(distinct.slice(0, MAX_ABANDONED_OUTCOMES).map((o) => o.error));
    expect(summary.outcomes.slice(MAX_ABANDONED_OUTCOMES)).toEqual([
      { status: 400, error: 'OTHER', requests: 1000 - MAX_ABANDONED_OUTCOMES },
      { status: 0, error: 'OTHER', requests: 1 },
    ]);
  });
});
