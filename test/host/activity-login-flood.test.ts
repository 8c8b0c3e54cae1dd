// Wrong tokens at the activity page's login: anyone who reaches a page served off loopback (`--ui 0.0.0.0:8090
// --ui-token …`) can post them as fast as the network carries them. Each was one warn line in the host's log (a
// disk, a journal, and the operator's own lines buried); they are now counted, one line per interval with the
// count, as the page's other refusals are.
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { startActivityServer } from '../../src/host/activity-server.ts';
import { createLiveTail } from '../../src/host/activity-live.ts';
import { activityFixture } from './activity-fixture.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

describe('activity page login', () => {
  it('counts wrong tokens in one log line per interval, not one line each', async () => {
    const { store, reader, lines, out } = await activityFixture('ea-activity-login-', cleanup);
    const token = 'correct-horse-battery-staple';
    const srv = await startActivityServer({
      host: '127.0.0.1', port: 0, token, store, reader, live: createLiveTail(), logger: pino({ level: 'info' }, out),
      enclave: () => ({ name: null, mode: null, pcrs: null, pcrsSource: null, startedAt: null, restarts: null }),
    });
    cleanup.push(() => srv.close());
    const login = (t: string) => fetch(`${srv.url}api/login`, { method: 'POST', body: JSON.stringify({ token: t }), headers: { 'content-type': 'application/json' } });
    for (let i = 0; i < 40; i++) expect((await login(`wrong-token-number-${i}`)).status).toBe(401);
    expect((await login(token)).status).toBe(200);
    await srv.close();
    const about = lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('wrong token'));
    expect(about).toEqual([expect.objectContaining({ level: 40, total: 40, counts: { 'wrong-token': 40 } })]);
    // Nothing of what was posted reaches the log.
    expect(JSON.stringify(lines)).not.toContain('wrong-token-number');
    expect(JSON.stringify(lines)).not.toContain(token);
  });
});
