// @vitest-environment happy-dom
// The same verifier suite as verify.test.ts, in a browser-like environment (window, document, WebCrypto).
import { expect, it } from 'vitest';
import { defineVerifyTests } from './verify-cases.ts';

it('runs under a browser-like environment with WebCrypto', () => {
  expect(typeof window).toBe('object');
  expect(typeof document.createElement).toBe('function');
  expect(typeof globalThis.crypto.subtle.verify).toBe('function');
});

defineVerifyTests('happy-dom');
