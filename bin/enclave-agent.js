#!/usr/bin/env node
// The `enclave-agent` command. An installed package runs the compiled CLI (dist/, built by `npm run build` at
// pack time) with production dependencies only. A git checkout (src/ beside bin/; the package does not ship
// src/) runs the TypeScript sources through tsx, a devDependency, so a dist/ left from an earlier build is never
// what runs there.
import { existsSync } from 'node:fs';

const sources = new URL('../src/cli.ts', import.meta.url);
if (existsSync(sources)) {
  const { register } = await import('tsx/esm/api');
  register();
  await import(sources.href);
} else {
  await import(new URL('../dist/cli.js', import.meta.url).href);
}
