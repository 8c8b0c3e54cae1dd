// A small WebSocket test client that records every binary message and how the connection closed.
import WebSocket, { type ClientOptions } from 'ws';

export class TestClient {
  readonly ws: WebSocket;
  readonly messages: Buffer[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  #received = 0;
  #waiters: (() => void)[] = [];

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (data: Buffer) => {
      this.messages.push(data);
      this.#received += data.length;
      for (const w of this.#waiters.splice(0)) w();
    });
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        resolve({ code, reason: reason.toString() });
        for (const w of this.#waiters.splice(0)) w();
      });
    });
    ws.on('error', () => {});
  }

  static open(url: string, opts: ClientOptions = {}): Promise<TestClient> {
    const ws = new WebSocket(url, opts);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new TestClient(ws)));
      ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { statusCode: res.statusCode })));
      ws.once('error', reject);
    });
  }

  get received(): number {
    return this.#received;
  }

  /** Waits until `pred()` holds (re-checked on every message and on close). */
  async until(pred: () => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error('timed out waiting for the client condition');
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  async message(index: number): Promise<Buffer> {
    await this.until(() => this.messages.length > index);
    return this.messages[index]!;
  }

  /** All bytes received so far, in order. */
  bytes(): Buffer {
    return Buffer.concat(this.messages);
  }
}
