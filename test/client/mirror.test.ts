// Byte compatibility with the Enclavia reference client (WIRE.md §4, §7), both ways:
// 1. Our agent works with the Enclavia client: we drive it through the bridge with exactly the bytes the reference
//    client produces — CBOR and HTTP built by hand here from WIRE.md, not with src/wire or src/client — and decode
//    its replies with a compat decoder that, like the reference, accepts byte fields only as int arrays and
//    ignores unknown keys (`features`).
// 2. Our client mirrors the reference client: against a server that advertises nothing, the Data messages our
//    SDK encrypts are byte-for-byte the hand-built ones (captured at the AEAD, before encryption).
import { decode as cborDecode } from 'cbor-x';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { verifyAttestation } from '../../src/attestation/verify.ts';
import { connect } from '../../src/client/node.ts';
import { createHandshake } from '../../src/noise/handshake.ts';
import type { NoisePrimitives } from '../../src/noise/primitives.ts';
import { nodePrimitives } from '../../src/noise/suite-node.ts';
import type { CipherState } from '../../src/noise/cipher-state.ts';
import { startStack, type Stack } from './stack.ts';

// ---------------------------------------------------------------------------------------------------------
// The reference client's encoding, by hand: serde internally tagged enum → CBOR map, "type" first, fields in
// declaration order, minimal ints, Vec<u8> as an array of uints.

function head(major: number, n: number): number[] {
  if (n < 24) return [(major << 5) | n];
  if (n < 0x100) return [(major << 5) | 24, n];
  if (n < 0x10000) return [(major << 5) | 25, n >> 8, n & 0xff];
  return [(major << 5) | 26, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
}
const text = (s: string): number[] => {
  const b = [...new TextEncoder().encode(s)];
  return [...head(3, b.length), ...b];
};
const uint = (n: number): number[] => head(0, n);
const intArray = (bytes: Uint8Array): number[] => {
  const out = head(4, bytes.length);
  for (const x of bytes) out.push(...uint(x));
  return out;
};
function refMessage(type: string, fields: [string, number[]][] = []): Uint8Array {
  return Uint8Array.from([...head(5, fields.length + 1), ...text('type'), ...text(type), ...fields.flatMap(([k, v]) => [...text(k), ...v])]);
}
const refRequestAttestation = (): Uint8Array => refMessage('RequestAttestation');
const refData = (id: number, payload: Uint8Array): Uint8Array => refMessage('Data', [['id', uint(id)], ['payload', intArray(payload)]]);

/** The reference RequestBuilder::send: Host inserted first, Connection: close appended, Content-Length when a body is set. */
function refHttpRequest(method: string, path: string, host: string, headers: [string, string][], body?: string): Uint8Array {
  const hs = [...headers];
  if (!hs.some(([k]) => k.toLowerCase() === 'host')) hs.unshift(['Host', host]);
  if (!hs.some(([k]) => k.toLowerCase() === 'connection')) hs.push(['Connection', 'close']);
  let out = `${method} ${path} HTTP/1.1\r\n`;
  for (const [k, v] of hs) out += `${k}: ${v}\r\n`;
  const bodyBytes = body === undefined ? undefined : new TextEncoder().encode(body);
  if (bodyBytes !== undefined && !hs.some(([k]) => k.toLowerCase() === 'content-length')) out += `Content-Length: ${bodyBytes.length}\r\n`;
  out += '\r\n';
  const headBytes = new TextEncoder().encode(out);
  if (bodyBytes === undefined) return headBytes;
  const all = new Uint8Array(headBytes.length + bodyBytes.length);
  all.set(headBytes);
  all.set(bodyBytes, headBytes.length);
  return all;
}

/** The compat decoder: a map with a text "type"; byte fields must be int arrays (the reference rejects bstr). */
function compatDecode(plain: Uint8Array): Record<string, unknown> {
  const v = cborDecode(plain) as unknown;
  if (v === null || typeof v !== 'object' || Array.isArray(v) || v instanceof Uint8Array) throw new Error('not a map');
  const m = v as Record<string, unknown>;
  if (typeof m.type !== 'string') throw new Error('no type');
  for (const key of ['payload', 'data', 'control_nonce', 'nonce']) {
    if (!(key in m)) continue;
    const field = m[key];
    if (!Array.isArray(field) || !field.every((x) => Number.isInteger(x) && x >= 0 && x <= 255)) throw new Error(`${key} is not an array of byte values (the reference client rejects this)`);
    m[key] = Uint8Array.from(field as number[]);
  }
  return m;
}

const bytesHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

const vectors = JSON.parse(readFileSync(path.resolve(process.cwd(), '../shared/fixtures/enclavia/wire-vectors.json'), 'utf8')) as {
  cbor_messages: { direction: string; type: string; fields: Record<string, unknown>; cbor_hex: string }[];
};

describe('the hand-built reference encoding', () => {
  it('matches the wire vectors for RequestAttestation and Data', () => {
    const byType = (t: string, id?: number) => vectors.cbor_messages.find((m) => m.direction === 'client' && m.type === t && (id === undefined || m.fields.id === id))!;
    expect(bytesHex(refRequestAttestation())).toBe(byType('RequestAttestation').cbor_hex);
    expect(bytesHex(refData(1, Buffer.from('6869', 'hex')))).toBe(byType('Data', 1).cbor_hex);
    expect(bytesHex(refData(300, Buffer.from('00ff17', 'hex')))).toBe(byType('Data', 300).cbor_hex);
  });
});

// ---------------------------------------------------------------------------------------------------------

let stack: Stack;

beforeAll(async () => {
  stack = await startStack(); // our agent with its default features (['bstr']): the reference client ignores them
});

afterAll(async () => {
  await stack?.close();
});

/** A WebSocket session driven like the reference client: hs1 as one message, hs2 = exactly the next message. */
async function referenceSession(url: string): Promise<{ send(plain: Uint8Array): void; next(): Promise<Record<string, unknown>>; hash: Uint8Array; close(): void }> {
  const ws = new WebSocket(url);
  ws.binaryType = 'nodebuffer';
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const hs = createHandshake({ role: 'initiator', primitives: nodePrimitives });
  const messages: Buffer[] = [];
  let wake: (() => void) | null = null;
  ws.on('message', (m: Buffer) => {
    messages.push(m);
    wake?.();
  });
  const nextWs = async (): Promise<Buffer> => {
    while (messages.length === 0) await new Promise<void>((r) => (wake = r));
    return messages.shift()!;
  };
  ws.send(hs.writeMessage());
  const hs2 = await nextWs();
  expect(hs2.length).toBe(48); // exactly one WS message holding hs2 and nothing else
  hs.readMessage(new Uint8Array(hs2));
  const t = hs.split();
  const send: CipherState = t.send;
  const recv: CipherState = t.recv;
  let accum = Buffer.alloc(0);
  return {
    hash: t.handshakeHash,
    send(plain) {
      const ct = send.encrypt(plain);
      const frame = Buffer.alloc(4 + ct.length);
      frame.writeUInt32BE(ct.length, 0);
      frame.set(ct, 4);
      ws.send(frame); // one WS message per record, as the reference client does
    },
    async next() {
      for (;;) {
        if (accum.length >= 4 && accum.length >= 4 + accum.readUInt32BE(0)) {
          const len = accum.readUInt32BE(0);
          const ct = accum.subarray(4, 4 + len);
          accum = accum.subarray(4 + len);
          return compatDecode(recv.decrypt(new Uint8Array(ct)));
        }
        accum = Buffer.concat([accum, await nextWs()]);
      }
    },
    close: () => ws.close(),
  };
}

describe('our agent driven with the reference client bytes', () => {
  it('attests, then answers GET and POST Data requests in int-array encoding', async () => {
    const s = await referenceSession(stack.url);
    try {
      s.send(refRequestAttestation());
      const att = await s.next();
      expect(att.type).toBe('Attestation');
      expect((att.control_nonce as Uint8Array).length).toBe(32);
      await verifyAttestation(att.data as Uint8Array, { nonce: s.hash, pcrs: stack.pins, roots: [stack.sim.rootPem] });

      s.send(refData(1, refHttpRequest('GET', '/hello', '127.0.0.1', [])));
      s.send(refData(2, refHttpRequest('POST', '/json', '127.0.0.1', [['Content-Type', 'application/json']], '{"k":"v"}')));
      const replies = [await s.next(), await s.next()].sort((a, b) => (a.id as number) - (b.id as number));
      expect(replies.map((r) => [r.type, r.id])).toEqual([
        ['Data', 1],
        ['Data', 2],
      ]);
      const get = new TextDecoder().decode(replies[0]!.payload as Uint8Array);
      expect(get).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      expect(get.endsWith('\r\n\r\nhello')).toBe(true);
      const post = new TextDecoder().decode(replies[1]!.payload as Uint8Array);
      expect(post.slice(post.indexOf('\r\n\r\n') + 4)).toBe('{"got":{"k":"v"},"contentType":"application/json"}');
    } finally {
      s.close();
    }
  });
});

describe('our client mirrors the reference client', () => {
  it('sends exactly the reference CBOR and HTTP bytes to a compat server', async () => {
    const compat = await startStack({ features: [] });
    const plaintexts: Uint8Array[] = [];
    const recording: NoisePrimitives & { encryptParts: undefined } = {
      ...nodePrimitives,
      encryptParts: undefined, // every message through encrypt, whole
      encrypt(cipher, key, nonce, ad, plaintext) {
        plaintexts.push(plaintext.slice());
        return nodePrimitives.encrypt(cipher, key, nonce, ad, plaintext);
      },
    };
    const client = await connect(compat.url, { pcrs: compat.pins, roots: [compat.sim.rootPem], primitives: recording });
    try {
      await (await client.fetch('/hello')).text();
      await (await client.fetch('/json', { method: 'POST', json: { k: 'v' } })).text();
      await (await client.post('/echo', { headers: [['X-Trace', 'a b'], ['Connection', 'keep-alive']], body: 'x' })).text();
      // NN message 2's empty payload is decrypted, not encrypted, by the initiator: the first AEAD encryption of
      // the session is RequestAttestation.
      const sent = plaintexts;
      expect(bytesHex(sent[0]!)).toBe(bytesHex(refRequestAttestation()));
      expect(bytesHex(sent[1]!)).toBe(bytesHex(refData(1, refHttpRequest('GET', '/hello', '127.0.0.1', []))));
      expect(bytesHex(sent[2]!)).toBe(bytesHex(refData(2, refHttpRequest('POST', '/json', '127.0.0.1', [['Content-Type', 'application/json']], '{"k":"v"}'))));
      expect(bytesHex(sent[3]!)).toBe(
        bytesHex(refData(3, refHttpRequest('POST', '/echo', '127.0.0.1', [['X-Trace', 'a b'], ['Connection', 'keep-alive']], 'x'))),
      );
      expect(sent).toHaveLength(4);
    } finally {
      await client.close();
      await compat.close();
    }
  });
});
