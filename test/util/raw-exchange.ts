import net from 'node:net';

/** Writes `raw` on one loopback connection and returns everything the server sent until it closed (or went silent 5 s). */
export function rawExchange(port: number, raw: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = net.connect(port, '127.0.0.1', () => s.write(raw));
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', reject);
    s.setTimeout(5000, () => s.destroy()); // a server that never answers: fail on what came, do not hang
    s.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
  });
}
