// `npm run fuzz -- [--runs N] [--seed S] [--path P] [vitest filters…]`: the fuzz properties of test/fuzz with
// more cases than CI runs (FUZZ_RUNS, default here 100,000 per property) and an optional seed (FUZZ_SEED;
// default: the fixed CI seed). To replay a failure, pass the seed and path fast-check printed and narrow to
// the one test: `npm run fuzz -- --seed 123 --path "4:1:0" -t 'answers random bytes'`.
// Anything else is handed to vitest; a bare word is a file filter inside test/fuzz (`npm run fuzz -- proxy`).
import { spawn } from 'node:child_process';

const USAGE = 'usage: npm run fuzz -- [--runs N] [--seed S] [--path P] [vitest args…]';

function main(argv: string[]): void {
  const env: NodeJS.ProcessEnv = { ...process.env, FUZZ_RUNS: process.env.FUZZ_RUNS ?? '100000' };
  const passthrough: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [flag, inline] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined || v === '') throw new Error(`${flag} needs a value\n${USAGE}`);
      return v;
    };
    switch (flag) {
      case '--runs': {
        const v = value();
        if (!/^[1-9][0-9]*$/.test(v)) throw new Error(`--runs: expected a positive integer, found ${JSON.stringify(v)}`);
        env.FUZZ_RUNS = v;
        break;
      }
      case '--seed': {
        const v = value();
        if (!/^-?[0-9]+$/.test(v)) throw new Error(`--seed: expected an integer, found ${JSON.stringify(v)}`);
        env.FUZZ_SEED = v;
        break;
      }
      case '--path':
        env.FUZZ_PATH = value();
        break;
      case '--help':
      case '-h':
        console.log(USAGE);
        return;
      case '-t':
      case '--testNamePattern':
        passthrough.push(arg, value());
        break;
      default:
        passthrough.push(arg);
    }
  }
  // vitest ORs its positional filters: narrow bare words to test/fuzz instead of adding them to it.
  const files = passthrough.filter((a, i) => !a.startsWith('-') && !['-t', '--testNamePattern'].includes(passthrough[i - 1] ?? ''));
  const rest = passthrough.filter((a) => !files.includes(a));
  const targets = files.length === 0 ? ['test/fuzz'] : files.map((f) => (f.startsWith('test/') ? f : `test/fuzz/${f}`));
  console.log(`fuzz: ${env.FUZZ_RUNS} runs per property, seed ${env.FUZZ_SEED ?? '(CI default)'}${env.FUZZ_PATH ? `, path ${env.FUZZ_PATH}` : ''}`);
  const child = spawn('npx', ['vitest', 'run', ...targets, ...rest], { stdio: 'inherit', env });
  child.on('exit', (code, signal) => {
    process.exitCode = code ?? (signal ? 1 : 0);
  });
}

try {
  main(process.argv.slice(2));
} catch (err) {
  console.error((err as Error).message);
  process.exitCode = 2;
}
