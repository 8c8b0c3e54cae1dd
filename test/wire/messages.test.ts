import { readFileSync } from 'node:fs';
import { decode as cborxDecode } from 'cbor-x';
import { describe, expect, it } from 'vitest';
import { concatBytes, fromHex, toHex } from '../../src/util/bytes.ts';
import {
  MAX_MAP_ENTRIES,
  MAX_MESSAGE_LEN,
  clientMessageSize,
  decodeClientMessage,
  decodeServerMessage,
  encodeClientMessage,
  encodeClientMessageInto,
  encodeClientMessageParts,
  encodeServerMessage,
  encodeServerMessageParts,
  serverMessageSize,
} from '../../src/wire/messages.ts';
import type { ClientMessage, ServerMessage } from '../../src/wire/messages.ts';
import { arr, bs, expectWireError, head, ints, map, t, traw, u } from './cbor-helpers.ts';

interface VectorMessage {
  direction: 'client' | 'server';
  type: string;
  fields: Record<string, string | number | boolean>;
  cbor_hex: string;
}
interface Vectors {
  cbor_messages: VectorMessage[];
  limits: Record<string, number>;
}
const vectors = JSON.parse(
  readFileSync(new URL('../../../shared/fixtures/enclavia/wire-vectors.json', import.meta.url), 'utf8'),
) as Vectors;

/** The vector's fields as a message object: `<name>_hex` → Uint8Array `<name>`. */
function messageOf(v: VectorMessage): ClientMessage | ServerMessage {
  const m: Record<string, unknown> = { type: v.type };
  for (const [k, val] of Object.entries(v.fields)) {
    if (k.endsWith('_hex')) m[k.slice(0, -4)] = fromHex(val as string);
    else m[k] = val;
  }
  return m as unknown as ClientMessage | ServerMessage;
}

const dc = (hex: string) => decodeClientMessage(fromHex(hex));
const ds = (hex: string) => decodeServerMessage(fromHex(hex));

describe('wire vectors (Enclavia reference encodings)', () => {
  for (const v of vectors.cbor_messages) {
    it(`${v.direction} ${v.type} ${JSON.stringify(v.fields).slice(0, 60)} encodes byte-identically and decodes to the same fields`, () => {
      const expected = messageOf(v);
      if (v.direction === 'client') {
        expect(toHex(encodeClientMessage(expected as ClientMessage))).toBe(v.cbor_hex);
        expect(clientMessageSize(expected as ClientMessage)).toBe(v.cbor_hex.length / 2);
        const { message, encoding } = dc(v.cbor_hex);
        expect(message).toEqual(expected);
        expect(encoding).toBe('array');
      } else {
        expect(toHex(encodeServerMessage(expected as ServerMessage))).toBe(v.cbor_hex);
        expect(serverMessageSize(expected as ServerMessage)).toBe(v.cbor_hex.length / 2);
        const { message, encoding } = ds(v.cbor_hex);
        expect(message).toEqual(expected);
        expect(encoding).toBe('array');
      }
    });
  }

  it('the vectors cover every variant of both directions', () => {
    const seen = new Set(vectors.cbor_messages.map((v) => `${v.direction}:${v.type}`));
    for (const type of ['RequestAttestation', 'GetControlNonce', 'Data', 'OpenStream', 'StreamData', 'StreamClose']) {
      expect(seen.has(`client:${type}`)).toBe(true);
    }
    for (const type of ['Attestation', 'Data', 'Error', 'StreamData', 'StreamClose', 'ControlNonce', 'ControlResult']) {
      expect(seen.has(`server:${type}`)).toBe(true);
    }
  });
});

describe('size limits', () => {
  const { limits } = vectors;
  const fill = (n: number, byte: number) => new Uint8Array(n).fill(byte);

  it('a Data payload of 32746 bytes ≥ 0x18 with id < 24 fits in 65519 bytes of CBOR and 32747 does not', () => {
    expect(limits.max_cbor_plaintext).toBe(MAX_MESSAGE_LEN);
    const max = limits.max_data_payload_all_bytes_ge_0x18_id_lt_24!;
    expect(max).toBe(32746);
    for (const byte of [0x18, 0x7f, 0xff]) {
      const fits: ServerMessage = { type: 'Data', id: 23, payload: fill(max, byte) };
      const over: ServerMessage = { type: 'Data', id: 23, payload: fill(max + 1, byte) };
      expect(encodeServerMessage(fits).length).toBeLessThanOrEqual(MAX_MESSAGE_LEN);
      expect(encodeServerMessage(over).length).toBeGreaterThan(MAX_MESSAGE_LEN);
      expect(encodeClientMessage(fits as ClientMessage).length).toBeLessThanOrEqual(MAX_MESSAGE_LEN);
      expect(clientMessageSize(over as ClientMessage)).toBeGreaterThan(MAX_MESSAGE_LEN);
    }
  });

  it('an all-zero Data payload of 65493 bytes fits and 65494 does not', () => {
    const max = limits.max_data_payload_all_zero!;
    expect(max).toBe(65493);
    expect(encodeServerMessage({ type: 'Data', id: 1, payload: fill(max, 0) }).length).toBe(MAX_MESSAGE_LEN);
    expect(serverMessageSize({ type: 'Data', id: 1, payload: fill(max + 1, 0) })).toBe(MAX_MESSAGE_LEN + 1);
  });

  it('the size functions agree with the encoders for both encodings', () => {
    const payload = new Uint8Array(1000).map((_, i) => (i * 37) & 0xff);
    for (const enc of ['array', 'bstr'] as const) {
      const m: ServerMessage = { type: 'StreamData', id: 70000, payload };
      expect(serverMessageSize(m, enc)).toBe(encodeServerMessage(m, enc).length);
    }
  });
});

describe('encoding', () => {
  it('writes ids with minimal-length heads up to 2^53-1', () => {
    for (const id of [0, 23, 24, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER]) {
      const bytes = encodeServerMessage({ type: 'StreamClose', id });
      expect(toHex(bytes)).toBe(map(t('type'), t('StreamClose'), t('id'), u(id)));
      expect(decodeServerMessage(bytes).message).toEqual({ type: 'StreamClose', id });
    }
  });

  it('writes int arrays exactly like a naive element-by-element encoder, at any length, content and alignment', () => {
    const naive = (b: Uint8Array) => head(4, b.length) + [...b].map((v) => u(v)).join('');
    const backing = new Uint8Array(600);
    let seed = 12345;
    const next = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 24;
    for (let len = 0; len <= 70; len++) {
      for (let offset = 0; offset < 4; offset++) {
        for (const mode of ['random', 'big', 'small', 'edges'] as const) {
          const payload = backing.subarray(offset, offset + len);
          for (let i = 0; i < len; i++) {
            payload[i] = mode === 'random' ? next() : mode === 'big' ? 24 + (next() % 232) : mode === 'small' ? next() % 24 : [23, 24, 0, 255, 127, 128][next() % 6]!;
          }
          const bytes = encodeClientMessage({ type: 'StreamData', id: 3, payload });
          expect(toHex(bytes)).toBe(map(t('type'), t('StreamData'), t('id'), u(3), t('payload'), naive(payload)));
          const { message } = decodeClientMessage(bytes);
          expect(toHex((message as { payload: Uint8Array }).payload)).toBe(toHex(payload));
          // and from an unaligned input buffer
          const shifted = new Uint8Array(bytes.length + offset).fill(0xaa).subarray(offset);
          shifted.set(bytes);
          expect(toHex((decodeClientMessage(shifted).message as { payload: Uint8Array }).payload)).toBe(toHex(payload));
        }
      }
    }
  });

  it('writes byte fields as byte strings in bstr mode and reads them back', () => {
    const payload = new Uint8Array(300).map((_, i) => i & 0xff);
    const bytes = encodeClientMessage({ type: 'Data', id: 7, payload }, 'bstr');
    expect(toHex(bytes)).toBe(map(t('type'), t('Data'), t('id'), u(7), t('payload'), bs(toHex(payload))));
    const { message, encoding } = decodeClientMessage(bytes);
    expect(encoding).toBe('bstr');
    expect(message).toEqual({ type: 'Data', id: 7, payload });

    const signature = new Uint8Array(64).fill(9);
    const control: ClientMessage = { type: 'Control', payload: new Uint8Array([1, 2, 3]), signature };
    expect(decodeClientMessage(encodeClientMessage(control, 'bstr'))).toEqual({ message: control, encoding: 'bstr' });
    const nonce: ServerMessage = { type: 'ControlNonce', nonce: new Uint8Array(32).fill(0xee) };
    expect(decodeServerMessage(encodeServerMessage(nonce, 'bstr'))).toEqual({ message: nonce, encoding: 'bstr' });
  });

  it('encodes in parts whose concatenation is the encoding, with a large bstr payload as its own uncopied part', () => {
    const sizes = [0, 1, 1023, 1024, 1025, 64_000, 65_480];
    for (const enc of ['array', 'bstr'] as const) {
      for (const n of sizes) {
        const payload = new Uint8Array(n).map((_, i) => (i * 29) & 0xff);
        const msgs: [ClientMessage | ServerMessage, 'client' | 'server'][] = [
          [{ type: 'StreamData', id: 2 ** 40, payload }, 'server'],
          [{ type: 'Data', id: 7, payload }, 'server'],
          [{ type: 'StreamData', id: 1, payload }, 'client'],
          [{ type: 'OpenStream', id: 23, payload }, 'client'],
          [{ type: 'Data', id: 24, payload }, 'client'],
        ];
        for (const [m, side] of msgs) {
          if (enc === 'array' && n > 30_000) continue; // does not fit one message as an int array
          const whole = side === 'server' ? encodeServerMessage(m as ServerMessage, enc) : encodeClientMessage(m as ClientMessage, enc);
          const parts = side === 'server' ? encodeServerMessageParts(m as ServerMessage, enc) : encodeClientMessageParts(m as ClientMessage, enc);
          expect(toHex(concatBytes(...parts))).toBe(toHex(whole));
          if (enc === 'bstr' && n >= 1024) {
            expect(parts).toHaveLength(2);
            expect(parts[1]).toBe(payload); // the caller's array itself: no copy
          } else expect(parts).toHaveLength(1);
        }
      }
    }
    const others: ServerMessage[] = [
      { type: 'Error', id: 3, message: 'x'.repeat(2000) },
      { type: 'StreamClose', id: 3 },
      { type: 'Attestation', data: new Uint8Array(5000), control_nonce: new Uint8Array(32), features: ['bstr'] },
    ];
    for (const m of others) expect(encodeServerMessageParts(m, 'bstr')).toEqual([encodeServerMessage(m, 'bstr')]);
  });

  it('encodes into a caller buffer at an offset exactly what encodeClientMessage returns, or throws without writing', () => {
    for (const enc of ['array', 'bstr'] as const) {
      for (const n of [0, 1, 300, 20_000]) {
        const m: ClientMessage = { type: 'StreamData', id: 77, payload: new Uint8Array(n).map((_, i) => (i * 7) & 0xff) };
        const whole = encodeClientMessage(m, enc);
        const out = new Uint8Array(whole.length + 9).fill(0xee);
        expect(encodeClientMessageInto(m, enc, out, 4)).toBe(4 + whole.length);
        expect(toHex(out.subarray(4, 4 + whole.length))).toBe(toHex(whole));
        expect([...out.subarray(0, 4), ...out.subarray(4 + whole.length)].every((b) => b === 0xee)).toBe(true);
        const small = new Uint8Array(whole.length + 3).fill(0xee);
        expectWireError(() => encodeClientMessageInto(m, enc, small, 4), 'WIRE_ENCODE');
        expect(small.every((b) => b === 0xee)).toBe(true);
      }
    }
  });

  it('returns byte-string fields as views into the input unless asked to copy', () => {
    const bytes = encodeServerMessage({ type: 'Data', id: 1, payload: new Uint8Array([5, 6, 7]) }, 'bstr');
    const view = decodeServerMessage(bytes).message as { payload: Uint8Array };
    const copy = decodeServerMessage(bytes, { copy: true }).message as { payload: Uint8Array };
    bytes[bytes.length - 1] = 0x42;
    expect([...view.payload]).toEqual([5, 6, 0x42]);
    expect([...copy.payload]).toEqual([5, 6, 7]);
  });

  it('round-trips Attestation features after control_nonce, and omits them unless given', () => {
    const base = { type: 'Attestation' as const, data: new Uint8Array([0x84, 0x40]), control_nonce: new Uint8Array(32).fill(3) };
    const plain = encodeServerMessage(base);
    expect(toHex(plain)).toBe(map(t('type'), t('Attestation'), t('data'), ints('8440'), t('control_nonce'), ints('03'.repeat(32))));
    const withFeatures = { ...base, features: ['bstr', 'ünïcode'] };
    const bytes = encodeServerMessage(withFeatures);
    expect(toHex(bytes)).toBe(
      map(t('type'), t('Attestation'), t('data'), ints('8440'), t('control_nonce'), ints('03'.repeat(32)), t('features'), arr(t('bstr'), t('ünïcode'))),
    );
    expect(decodeServerMessage(bytes)).toEqual({ message: withFeatures, encoding: 'array' });
    expect(decodeServerMessage(encodeServerMessage({ ...base, features: [] })).message).toEqual({ ...base, features: [] });
    expect('features' in decodeServerMessage(plain).message).toBe(false);
  });

  it('produces what an independent CBOR decoder (cbor-x) reads as the serde shape', () => {
    const payload = new Uint8Array([0, 23, 24, 255]);
    expect(cborxDecode(encodeClientMessage({ type: 'OpenStream', id: 2 ** 31, payload }))).toEqual({
      type: 'OpenStream',
      id: 2 ** 31,
      payload: [0, 23, 24, 255],
    });
    expect(cborxDecode(encodeServerMessage({ type: 'ControlResult', success: true, message: 'ok' }))).toEqual({
      type: 'ControlResult',
      success: true,
      message: 'ok',
    });
  });

  it('rejects invalid messages with WIRE_ENCODE', () => {
    const p = new Uint8Array(1);
    const bad: unknown[] = [
      { type: 'Data', id: -1, payload: p },
      { type: 'Data', id: 1.5, payload: p },
      { type: 'Data', id: 2 ** 53, payload: p },
      { type: 'Data', id: '1', payload: p },
      { type: 'Data', id: 1, payload: [1, 2] },
      { type: 'StreamClose', id: 1, half: 'Read' },
      { type: 'Nope' },
      { type: 'Attestation' }, // a server variant on the client side
      null,
    ];
    for (const m of bad) expectWireError(() => encodeClientMessage(m as ClientMessage), 'WIRE_ENCODE');
    const badServer: unknown[] = [
      { type: 'ControlNonce', nonce: new Uint8Array(31) },
      { type: 'Attestation', data: p, control_nonce: new Uint8Array(33) },
      { type: 'Attestation', data: p, control_nonce: new Uint8Array(32), features: [1] },
      { type: 'ControlResult', success: 1, message: 'x' },
      { type: 'Error', id: 1, message: 5 },
      { type: 'RequestAttestation' },
    ];
    for (const m of badServer) expectWireError(() => encodeServerMessage(m as ServerMessage), 'WIRE_ENCODE');
    expectWireError(() => encodeServerMessage({ type: 'StreamClose', id: 1 }, 'base64' as 'bstr'), 'WIRE_ENCODE');
  });
});

describe('decoding: what serde accepts, we accept', () => {
  it('accepts any key order, including "type" last', () => {
    const hex = map(t('payload'), ints('6869'), t('id'), u(1), t('type'), t('Data'));
    expect(dc(hex).message).toEqual({ type: 'Data', id: 1, payload: new Uint8Array([0x68, 0x69]) });
    const hex2 = map(t('half'), t('Both'), t('type'), t('StreamClose'), t('id'), u(9));
    expect(dc(hex2).message).toEqual({ type: 'StreamClose', id: 9, half: 'Both' });
  });

  it('ignores unknown keys of any well-formed value, and known keys the variant does not use', () => {
    const ignored = [
      t('x'), map(t('a'), arr(u(1), bs('ff'), map()), t('b'), 'f6'), // nested map / array / bstr / null
      t('y'), '3903e7', // negative int
      t('z'), 'f5', // true
      t('w'), 'f7', // undefined
      t('half'), t('Read'), // a known key of another variant, with a value that would be invalid there
      t('signature'), u(5),
    ];
    const hex = map(t('type'), t('Data'), ...ignored, t('id'), u(4), t('payload'), ints('00'));
    expect(dc(hex).message).toEqual({ type: 'Data', id: 4, payload: new Uint8Array([0]) });
  });

  it('accepts non-minimal integer encodings in ids and byte elements', () => {
    const hex = map(t('type'), t('Data'), t('id'), '1b0000000000000005', t('payload'), arr('1900ff', '1a00000041', '1817'));
    expect(dc(hex).message).toEqual({ type: 'Data', id: 5, payload: new Uint8Array([0xff, 0x41, 0x17]) });
  });

  it('accepts the largest safe id and rejects the next one with WIRE_INT_RANGE', () => {
    const at = (id: string) => map(t('type'), t('StreamClose'), t('id'), id);
    expect(ds(at(u(Number.MAX_SAFE_INTEGER))).message).toEqual({ type: 'StreamClose', id: Number.MAX_SAFE_INTEGER });
    expectWireError(() => ds(at('1b0020000000000000')), 'WIRE_INT_RANGE'); // 2^53
    expectWireError(() => ds(at('1bffffffffffffffff')), 'WIRE_INT_RANGE'); // 2^64-1
  });

  it('reports the encoding a request used so the reply can mirror it', () => {
    expect(dc(map(t('type'), t('Data'), t('id'), u(1), t('payload'), ints('01'))).encoding).toBe('array');
    expect(dc(map(t('type'), t('Data'), t('id'), u(1), t('payload'), bs('01'))).encoding).toBe('bstr');
    expect(dc(map(t('type'), t('Data'), t('id'), u(1), t('payload'), bs(''))).encoding).toBe('bstr');
    expect(dc(map(t('type'), t('Data'), t('id'), u(1), t('payload'), arr())).encoding).toBe('array');
    // mixed: one byte string is enough
    expect(dc(map(t('type'), t('Control'), t('payload'), ints('01'), t('signature'), bs('02'))).encoding).toBe('bstr');
    // no byte fields at all
    expect(dc(map(t('type'), t('RequestAttestation'))).encoding).toBe('array');
    expect(dc(map(t('type'), t('StreamClose'), t('id'), u(1), t('half'), t('Write'))).encoding).toBe('array');
    // an ignored byte string does not count
    expect(dc(map(t('type'), t('GetControlNonce'), t('payload'), bs('01'))).encoding).toBe('array');
  });
});

describe('decoding: rejections (one per class, each a typed WireError)', () => {
  const data = (payload: string, extra: string[] = []) => map(t('type'), t('Data'), t('id'), u(1), t('payload'), payload, ...extra);

  it('WIRE_DECODE truncated: every proper prefix of a valid message', () => {
    const hex = vectors.cbor_messages.find((v) => v.type === 'Attestation')!.cbor_hex;
    for (let n = 0; n < hex.length / 2; n++) expectWireError(() => ds(hex.slice(0, n * 2)), 'WIRE_DECODE', 'truncated');
    // an array count larger than the input fails before allocating
    const prefix = head(5, 3) + t('type') + t('Data') + t('id') + u(1) + t('payload');
    expectWireError(() => dc(prefix + '9bffffffffffffffff'), 'WIRE_DECODE', 'truncated');
    expectWireError(() => dc(prefix + '5a7fffffff'), 'WIRE_DECODE', 'truncated');
  });

  it('WIRE_DECODE trailing: bytes after the message', () => {
    expectWireError(() => dc(map(t('type'), t('GetControlNonce')) + '00'), 'WIRE_DECODE', 'trailing');
    expectWireError(() => dc(map(t('type'), t('GetControlNonce')) + map(t('type'), t('GetControlNonce'))), 'WIRE_DECODE', 'trailing');
  });

  it('WIRE_DECODE not-map: a top level other than a map', () => {
    expectWireError(() => dc(arr(t('Data'), u(1))), 'WIRE_DECODE', 'not-map');
    expectWireError(() => dc(t('RequestAttestation')), 'WIRE_DECODE', 'not-map');
  });

  it('WIRE_DECODE key-type: a non-text map key', () => {
    expectWireError(() => dc(map(t('type'), t('Data'), u(1), u(1), t('id'), u(1), t('payload'), arr())), 'WIRE_DECODE', 'key-type');
    expectWireError(() => dc(map(bs('74797065'), t('Data'))), 'WIRE_DECODE', 'key-type');
  });

  it('WIRE_DECODE duplicate-key: a repeated key, known or unknown', () => {
    expectWireError(() => dc(data(ints('01'), [t('id'), u(2)])), 'WIRE_DECODE', 'duplicate-key');
    expectWireError(() => dc(map(t('type'), t('GetControlNonce'), t('type'), t('GetControlNonce'))), 'WIRE_DECODE', 'duplicate-key');
    expectWireError(() => dc(data(ints('01'), [t('x'), u(1), t('x'), u(1)])), 'WIRE_DECODE', 'duplicate-key');
    // a repeated key the variant does not use is still a duplicate
    expectWireError(() => dc(data(ints('01'), [t('half'), u(1), t('half'), u(1)])), 'WIRE_DECODE', 'duplicate-key');
  });

  it('WIRE_DECODE map-size: a message map of more than MAX_MAP_ENTRIES entries (each unknown key is checked against the others)', () => {
    const unknown = (n: number): string[] => Array.from({ length: n }, (_, i) => [t(`k${i}`), u(0)]).flat();
    // At the bound, unknown keys are ignored as ever.
    expect(dc(map(t('type'), t('GetControlNonce'), ...unknown(MAX_MAP_ENTRIES - 1))).message).toEqual({ type: 'GetControlNonce' });
    // One more: refused from the map's head, before any key is read (a frame could hold ~15,000 unique keys).
    expectWireError(() => dc(map(t('type'), t('GetControlNonce'), ...unknown(MAX_MAP_ENTRIES))), 'WIRE_DECODE', 'map-size');
    expectWireError(() => decodeServerMessage(fromHex(map(t('type'), t('StreamClose'), t('id'), u(1), ...unknown(MAX_MAP_ENTRIES - 1)))), 'WIRE_DECODE', 'map-size');
  });

  it('WIRE_DECODE tag: tags anywhere (field, element, ignored value, top level)', () => {
    expectWireError(() => dc(data('d840' + bs('01'))), 'WIRE_DECODE', 'tag');
    expectWireError(() => dc(data(arr('c100'))), 'WIRE_DECODE', 'tag');
    expectWireError(() => dc(data(ints('01'), [t('x'), 'c0' + t('2020')])), 'WIRE_DECODE', 'tag');
    expectWireError(() => dc('d9d9f7' + map(t('type'), t('GetControlNonce'))), 'WIRE_DECODE', 'tag');
  });

  it('WIRE_DECODE indefinite: indefinite-length arrays, strings and maps', () => {
    expectWireError(() => dc(data('9f0102ff')), 'WIRE_DECODE', 'indefinite');
    expectWireError(() => dc(data('5f4101ff')), 'WIRE_DECODE', 'indefinite');
    expectWireError(() => dc('bf' + t('type') + t('GetControlNonce') + 'ff'), 'WIRE_DECODE', 'indefinite');
    expectWireError(() => dc(data(ints('01'), [t('x'), '7f6161ff'])), 'WIRE_DECODE', 'indefinite');
  });

  it('WIRE_DECODE float: floats in fields, elements and ignored values', () => {
    expectWireError(() => dc(map(t('type'), t('StreamClose'), t('id'), 'f93c00', t('half'), t('Both'))), 'WIRE_DECODE', 'float');
    expectWireError(() => dc(data(arr('fa3f800000'))), 'WIRE_DECODE', 'float');
    expectWireError(() => dc(data(ints('01'), [t('x'), 'fb3ff0000000000000'])), 'WIRE_DECODE', 'float');
  });

  it('WIRE_DECODE simple / reserved: other simple values, stray breaks, reserved additional info', () => {
    expectWireError(() => dc(data(ints('01'), [t('x'), 'f0'])), 'WIRE_DECODE', 'simple');
    expectWireError(() => dc(data(ints('01'), [t('x'), 'f820'])), 'WIRE_DECODE', 'simple');
    expectWireError(() => dc(data(ints('01'), [t('x'), 'ff'])), 'WIRE_DECODE', 'simple');
    expectWireError(() => dc(data(arr('1c'))), 'WIRE_DECODE', 'reserved');
    expectWireError(() => dc(map(t('type'), t('StreamClose'), t('id'), '1f', t('half'), t('Both'))), 'WIRE_DECODE', 'reserved');
  });

  it('WIRE_DECODE utf8: invalid UTF-8 in keys, type, text fields and ignored text', () => {
    expectWireError(() => dc(map(t('type'), t('GetControlNonce'), traw('ff'), u(1))), 'WIRE_DECODE', 'utf8');
    expectWireError(() => dc(map(t('type'), traw('c0af'))), 'WIRE_DECODE', 'utf8');
    expectWireError(() => ds(map(t('type'), t('Error'), t('id'), u(1), t('message'), traw('6f6bed'))), 'WIRE_DECODE', 'utf8');
    expectWireError(() => ds(map(t('type'), t('Error'), t('id'), u(1), t('message'), traw('eda080'))), 'WIRE_DECODE', 'utf8'); // surrogate
    expectWireError(() => dc(data(ints('01'), [t('x'), traw('80')])), 'WIRE_DECODE', 'utf8');
  });

  it('WIRE_DECODE depth: an ignored value nested deeper than the bound (16 levels below the message map are fine)', () => {
    const nest = (levels: number) => '81'.repeat(levels) + '00';
    expect(dc(data(ints('01'), [t('x'), nest(15)])).message.type).toBe('Data');
    expectWireError(() => dc(data(ints('01'), [t('x'), nest(16)])), 'WIRE_DECODE', 'depth');
    expectWireError(() => dc(data(ints('01'), [t('x'), '81'.repeat(10000) + '00'])), 'WIRE_DECODE', 'depth');
  });

  it('WIRE_UNKNOWN_TYPE: unknown variants and the other direction’s variants', () => {
    expectWireError(() => dc(map(t('type'), t('Nope'))), 'WIRE_UNKNOWN_TYPE');
    expectWireError(() => dc(map(t('type'), t('data'))), 'WIRE_UNKNOWN_TYPE'); // case matters
    expectWireError(() => dc(map(t('type'), t('Attestation'), t('data'), arr(), t('control_nonce'), ints('00'.repeat(32)))), 'WIRE_UNKNOWN_TYPE');
    expectWireError(() => ds(map(t('type'), t('RequestAttestation'))), 'WIRE_UNKNOWN_TYPE');
    expectWireError(() => ds(map(t('type'), t('Control'), t('payload'), arr(), t('signature'), arr())), 'WIRE_UNKNOWN_TYPE');
  });

  it('WIRE_MISSING_FIELD: no type, or a required field absent', () => {
    expectWireError(() => dc(map()), 'WIRE_MISSING_FIELD');
    expectWireError(() => dc(map(t('id'), u(1), t('payload'), arr())), 'WIRE_MISSING_FIELD');
    expectWireError(() => dc(map(t('type'), t('Data'), t('id'), u(1))), 'WIRE_MISSING_FIELD');
    expectWireError(() => dc(map(t('type'), t('StreamClose'), t('id'), u(1))), 'WIRE_MISSING_FIELD');
    expectWireError(() => dc(map(t('type'), t('Control'), t('payload'), arr())), 'WIRE_MISSING_FIELD');
    expectWireError(() => ds(map(t('type'), t('Attestation'), t('data'), arr())), 'WIRE_MISSING_FIELD');
    expectWireError(() => ds(map(t('type'), t('ControlResult'), t('message'), t('x'))), 'WIRE_MISSING_FIELD');
  });

  it('WIRE_BAD_FIELD: wrong types and invalid values', () => {
    const cases = [
      () => dc(map(t('type'), u(1))), // type not text
      () => dc(map(t('type'), t('Data'), t('id'), t('1'), t('payload'), arr())), // id as text
      () => dc(map(t('type'), t('Data'), t('id'), '20', t('payload'), arr())), // id negative
      () => dc(data(t('hi'))), // payload as text
      () => dc(data('f6')), // payload null
      () => dc(data(arr(t('a')))), // element not an int
      () => dc(data(arr('20'))), // element negative
      () => dc(data(arr(arr()))), // element an array
      () => dc(map(t('type'), t('StreamClose'), t('id'), u(1), t('half'), t('Read'))),
      () => dc(map(t('type'), t('StreamClose'), t('id'), u(1), t('half'), t('write'))),
      () => dc(map(t('type'), t('StreamClose'), t('id'), u(1), t('half'), u(0))),
      () => ds(map(t('type'), t('ControlNonce'), t('nonce'), ints('00'.repeat(31)))),
      () => ds(map(t('type'), t('ControlNonce'), t('nonce'), bs('00'.repeat(33)))),
      () => ds(map(t('type'), t('Attestation'), t('data'), arr(), t('control_nonce'), arr())),
      () => ds(map(t('type'), t('ControlResult'), t('success'), u(1), t('message'), t('x'))),
      () => ds(map(t('type'), t('ControlResult'), t('success'), 'f6', t('message'), t('x'))),
      () => ds(map(t('type'), t('Error'), t('id'), u(1), t('message'), bs('6869'))),
      () => ds(map(t('type'), t('Attestation'), t('data'), arr(), t('control_nonce'), ints('00'.repeat(32)), t('features'), t('bstr'))),
      () => ds(map(t('type'), t('Attestation'), t('data'), arr(), t('control_nonce'), ints('00'.repeat(32)), t('features'), arr(u(1)))),
    ];
    for (const fn of cases) expectWireError(fn, 'WIRE_BAD_FIELD');
  });

  it('WIRE_INT_RANGE: a byte element above 255 (in any integer width)', () => {
    expectWireError(() => dc(data(arr(u(256)))), 'WIRE_INT_RANGE');
    expectWireError(() => dc(data(arr('1a00010000'))), 'WIRE_INT_RANGE');
    expectWireError(() => dc(data(arr(u(1), u(2), '1bffffffffffffffff'))), 'WIRE_INT_RANGE');
  });

  it('checks a field that came before "type" against the variant once the type is known', () => {
    expectWireError(() => dc(map(t('payload'), arr(u(300)), t('id'), u(1), t('type'), t('Data'))), 'WIRE_INT_RANGE');
    expectWireError(() => dc(map(t('id'), t('x'), t('payload'), arr(), t('type'), t('Data'))), 'WIRE_BAD_FIELD');
    // ...but not against a variant that does not use it
    expect(dc(map(t('id'), t('x'), t('type'), t('RequestAttestation'))).message).toEqual({ type: 'RequestAttestation' });
  });

  it('bounds its work by the input: a huge declared map or array fails fast (map-size at the top, truncated inside)', () => {
    expectWireError(() => dc(head(5, 2 ** 40)), 'WIRE_DECODE', 'map-size');
    expectWireError(() => dc(data(ints('01'), [t('x'), head(5, 2 ** 40)])), 'WIRE_DECODE', 'truncated');
    expectWireError(() => dc(data(ints('01'), [t('x'), head(4, 2 ** 31)])), 'WIRE_DECODE', 'truncated');
  });
});
