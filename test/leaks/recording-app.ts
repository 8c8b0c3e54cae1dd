// The app the leak checks forward to: it keeps what reached it (method, target, headers, body: the proof each
// path delivered the plaintext) and echoes the body as JSON. `dropPrefix`: requests whose target starts with it
// have their connection destroyed unanswered (the agent answers 502).
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordingApp {
  port: number;
  received: string[];
  close(): Promise<void>;
}

export async function startRecordingApp(opts: { dropPrefix?: string } = {}): Promise<RecordingApp> {
  const received: string[] = [];
  const server = http.createServer((req, res) => {
    if (opts.dropPrefix !== undefined && req.url?.startsWith(opts.dropPrefix) === true) {
      req.socket.destroy();
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      received.push(`${req.method} ${req.url}\n${JSON.stringify(req.headers)}\n${body}`);
      res.setHeader('content-type', 'application/json');
      res.end(body === '' ? '{}' : body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    received,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
