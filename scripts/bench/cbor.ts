// Wire CBOR: encode+decode of one 32 KiB Data message (a raw HTTP response as payload) with our hand-written
// codec, in int-array mode (what the Enclavia client speaks) and bstr mode (our extension), next to baselines
// measured in the same run: cbor-x (generic CBOR) on the same message shape — payload as Array<number>, which
// is what a generic encoder needs to produce serde's int arrays — and as bytes, and a plain 32 KiB copy.
// Second table: int-array StreamData encode and decode with the JS loops vs the native addon's (setIntArrayCodec,
// src/wire/native-int-array.ts), 16 and 32 KiB, in the same run (skipped when the addon is not built).
import { Decoder, Encoder } from 'cbor-x';
import { decodeServerMessage, encodeServerMessage, getIntArrayCodec, setIntArrayCodec } from '../../src/wire/messages.ts';
import type { IntArrayCodec, ServerMessage } from '../../src/wire/messages.ts';
import { nativeIntArrayCodec } from '../../src/wire/native-int-array.ts';
import { measure, printTable, ratio } from './lib.ts';

// The machine is shared: cases are measured in alternating short windows and the best window of each is
// kept, so a burst of load elsewhere hits every case alike. "CPU" figures divide by the process CPU time
// spent instead of wall time (what one busy core does).
const WINDOW_MS = 300;
const ROUNDS = 3;
const TARGET = 5000;
const SIZE = 32 * 1024;

/** A realistic payload: an HTTP/1.1 response head (CRLFs: elements < 24) and a JSON body, to 32 KiB. */
function httpResponse(size: number): Uint8Array {
  const item = '{"id":12345,"name":"Ada Lovelace","email":"ada@example.com","balance":"1024.50","tags":["a","b"]},';
  let body = '[';
  while (body.length < size) body += item;
  const head = `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${size}\r\nConnection: close\r\n\r\n`;
  return new TextEncoder().encode((head + body).slice(0, size));
}

function randomBinary(size: number): Uint8Array {
  const b = new Uint8Array(size);
  let x = 0x9e3779b9;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

interface Case {
  name: string;
  fn: () => unknown;
  /** The int-array codec installed while this case runs (null: the JS loops). */
  codec?: IntArrayCodec | null;
}

interface Result {
  opsPerSec: number;
  cpuOpsPerSec: number;
}

async function window(fn: () => unknown, codec: IntArrayCodec | null = null): Promise<Result> {
  setIntArrayCodec(codec, 0); // the threshold does not matter at 16/32 KiB
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const m = await measure(fn, { minMs: WINDOW_MS, warmupMs: 50 });
  const cpu = process.cpuUsage(c0);
  setIntArrayCodec(null);
  const wallMs = performance.now() - t0;
  const cpuMs = (cpu.user + cpu.system) / 1000;
  // the CPU share of the whole window (warm-up included) applies to the measured part too
  const share = Math.min(1, cpuMs / wallMs);
  return { opsPerSec: m.opsPerSec, cpuOpsPerSec: m.opsPerSec / Math.max(share, 1e-6) };
}

export default async function cbor(): Promise<void> {
  const http = httpResponse(SIZE);
  const binary = randomBinary(SIZE);
  const msg = (payload: Uint8Array): ServerMessage => ({ type: 'Data', id: 42, payload });
  const roundTrip = (payload: Uint8Array, enc: 'array' | 'bstr') => () => {
    const bytes = encodeServerMessage(msg(payload), enc);
    const { message } = decodeServerMessage(bytes);
    if ((message as { payload: Uint8Array }).payload.length !== SIZE) throw new Error('bad round trip');
  };

  const cborx = new Encoder({ useRecords: false, mapsAsObjects: true, variableMapSize: true, tagUint8Array: false });
  const cborxDecoder = new Decoder({ useRecords: false, mapsAsObjects: true });
  const cborxInts = () => {
    // the generic path: bytes → Array<number> → CBOR → Array<number> → bytes
    const bytes = cborx.encode({ type: 'Data', id: 42, payload: Array.from(http) });
    const back = cborxDecoder.decode(bytes) as { payload: number[] };
    if (Uint8Array.from(back.payload).length !== SIZE) throw new Error('bad round trip');
  };
  const cborxBytes = () => {
    const bytes = cborx.encode({ type: 'Data', id: 42, payload: http });
    const back = cborxDecoder.decode(bytes) as { payload: Uint8Array };
    if (back.payload.length !== SIZE) throw new Error('bad round trip');
  };
  // sanity: our int-array encoding is what cbor-x produces for the serde shape
  const ours = encodeServerMessage(msg(http));
  const theirs = cborx.encode({ type: 'Data', id: 42, payload: Array.from(http) });
  if (Buffer.compare(Buffer.from(ours), Buffer.from(theirs)) !== 0) throw new Error('encodings differ from cbor-x');

  const encoded = encodeServerMessage(msg(http));
  const native = nativeIntArrayCodec();
  const TARGETED = 'ours int-array encode+decode (HTTP payload)';
  const cases: Case[] = [
    { name: `${TARGETED}, JS loops`, fn: roundTrip(http, 'array') },
    // what the agent and the Node client run when the addon is built (installNativeIntArrayCodec)
    ...(native === null ? [] : [{ name: `${TARGETED}, the addon's loops`, fn: roundTrip(http, 'array'), codec: native }]),
    { name: 'ours int-array encode+decode (random binary)', fn: roundTrip(binary, 'array') },
    { name: 'ours int-array encode only (HTTP payload)', fn: () => encodeServerMessage(msg(http)) },
    { name: 'ours int-array decode only (HTTP payload)', fn: () => decodeServerMessage(encoded) },
    { name: 'ours bstr encode+decode (HTTP payload)', fn: roundTrip(http, 'bstr') },
    { name: 'baseline: cbor-x encode+decode, payload as Array<number>', fn: cborxInts },
    { name: 'baseline: cbor-x encode+decode, payload as bytes', fn: cborxBytes },
    { name: 'baseline: Uint8Array copy of 32 KiB', fn: () => http.slice() },
  ];
  const mainCount = cases.length;

  // JS vs native int-array loops on StreamData (the agent's stream payloads)
  const installed = getIntArrayCodec();
  interface Pair { label: string; size: number; js: string; native: string }
  const pairs: Pair[] = [];
  if (native !== null) {
    const payloads: [string, Uint8Array][] = [
      ['16 KiB HTTP', httpResponse(16 * 1024)],
      ['16 KiB random', randomBinary(16 * 1024)],
      ['32 KiB HTTP', http],
    ];
    for (const [label, payload] of payloads) {
      const m: ServerMessage = { type: 'StreamData', id: 42, payload };
      const bytes = encodeServerMessage(m);
      for (const [op, fn] of [
        ['encode', () => encodeServerMessage(m)],
        ['decode', () => decodeServerMessage(bytes)],
      ] as const) {
        const js = `int-array StreamData ${op} ${label}: JS`;
        const nat = `int-array StreamData ${op} ${label}: native`;
        cases.push({ name: js, fn, codec: null }, { name: nat, fn, codec: native });
        pairs.push({ label: `${op} ${label}`, size: payload.length, js, native: nat });
      }
    }
  }

  const best = new Map<string, Result>();
  for (let r = 0; r < ROUNDS; r++) {
    for (const c of cases) {
      const res = await window(c.fn, c.codec ?? null);
      const prev = best.get(c.name);
      best.set(c.name, {
        opsPerSec: Math.max(prev?.opsPerSec ?? 0, res.opsPerSec),
        cpuOpsPerSec: Math.max(prev?.cpuOpsPerSec ?? 0, res.cpuOpsPerSec),
      });
    }
  }

  const cborxInt = best.get('baseline: cbor-x encode+decode, payload as Array<number>')!;
  const copy = best.get('baseline: Uint8Array copy of 32 KiB')!;
  const rows: (string | number)[][] = [['32 KiB Data message', 'ops/s', 'ops/s (CPU time)', 'payload MB/s', 'vs cbor-x ints', 'vs 32 KiB copy', 'target']];
  for (const c of cases.slice(0, mainCount)) {
    const r = best.get(c.name)!;
    const target =
      c.name.startsWith(TARGETED)
        ? `≥ ${TARGET.toLocaleString('en-US')}/s: ${r.opsPerSec >= TARGET ? '✓' : '✗'} wall, ${r.cpuOpsPerSec >= TARGET ? '✓' : '✗'} CPU`
        : '';
    rows.push([c.name, r.opsPerSec, r.cpuOpsPerSec, (r.opsPerSec * SIZE) / 1e6, ratio(r.opsPerSec, cborxInt.opsPerSec), ratio(r.opsPerSec, copy.opsPerSec), target]);
  }
  printTable(`Wire CBOR — one 32 KiB Data message (best of ${ROUNDS} × ${WINDOW_MS} ms windows)`, rows);

  if (native === null) {
    console.log('int-array JS vs native: skipped (the native addon is not built)');
  } else {
    const nsPerByte = (r: Result, size: number) => 1e9 / r.opsPerSec / size;
    const table: (string | number)[][] = [['StreamData, int-array', 'JS ops/s', 'native ops/s', 'JS ns/byte', 'native ns/byte', 'native vs JS']];
    for (const p of pairs) {
      const js = best.get(p.js)!;
      const nat = best.get(p.native)!;
      table.push([p.label, js.opsPerSec, nat.opsPerSec, nsPerByte(js, p.size), nsPerByte(nat, p.size), ratio(nat.opsPerSec, js.opsPerSec)]);
    }
    printTable(`Int-array loops: JS vs native addon, whole message encode/decode (best of ${ROUNDS} × ${WINDOW_MS} ms windows)`, table);
  }
  setIntArrayCodec(installed);
}
