// The page's script and stylesheet. The installed package carries them prebuilt (`npm run build:ui` writes
// dist/host/ui/app.js and app.css next to the compiled server, as part of `npm run build`); a git checkout,
// which runs the TypeScript sources, builds them once in memory with esbuild (a devDependency) from
// src/host/ui/main.ts the first time the page is served. uPlot and its stylesheet are bundled in: nothing
// is fetched from anywhere at run time.
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type * as Esbuild from 'esbuild';
import { AgentError } from '../errors.ts';

export type ActivityUiErrorCode = 'ACTIVITY_UI_MISSING';

export class ActivityUiError extends AgentError {
  declare readonly code: ActivityUiErrorCode;
  constructor(code: ActivityUiErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

export interface UiAssets {
  js: Buffer;
  css: Buffer;
  /** 'prebuilt' (dist/host/ui) or 'esbuild' (built from the sources now). */
  source: 'prebuilt' | 'esbuild';
}

async function prebuilt(): Promise<UiAssets | null> {
  try {
    const [js, css] = await Promise.all([readFile(new URL('./ui/app.js', import.meta.url)), readFile(new URL('./ui/app.css', import.meta.url))]);
    return { js, css, source: 'prebuilt' };
  } catch {
    return null;
  }
}

async function fromSources(): Promise<UiAssets> {
  const entry = fileURLToPath(new URL('./ui/main.ts', import.meta.url));
  let esbuild: typeof Esbuild;
  try {
    esbuild = await import('esbuild');
  } catch (err) {
    throw new ActivityUiError('ACTIVITY_UI_MISSING', 'the activity page is not built (dist/host/ui/app.js missing) and esbuild is not installed to build it: run `npm run build:ui`', { cause: err });
  }
  const out = await esbuild.build({
    entryPoints: [entry],
    bundle: true,
    minify: true,
    format: 'esm',
    target: 'es2020',
    write: false,
    outdir: 'out',
    entryNames: 'app',
    logLevel: 'silent',
    legalComments: 'none',
  });
  const js = out.outputFiles.find((f) => f.path.endsWith('.js'));
  const css = out.outputFiles.find((f) => f.path.endsWith('.css'));
  if (js === undefined || css === undefined) throw new ActivityUiError('ACTIVITY_UI_MISSING', 'esbuild gave no app.js/app.css for the activity page');
  return { js: Buffer.from(js.contents), css: Buffer.from(css.contents), source: 'esbuild' };
}

let cached: Promise<UiAssets> | null = null;

/** The page's assets: prebuilt when present, else built from the sources (once per process). */
export function loadUiAssets(): Promise<UiAssets> {
  if (cached === null) {
    const loading = (async (): Promise<UiAssets> => {
      const built = await prebuilt();
      if (built !== null) return built;
      if (import.meta.url.endsWith('.ts')) return fromSources();
      throw new ActivityUiError('ACTIVITY_UI_MISSING', 'the activity page is not built: dist/host/ui/app.js is missing (npm run build:ui)');
    })();
    loading.catch(() => {
      cached = null;
    });
    cached = loading;
  }
  return cached;
}
