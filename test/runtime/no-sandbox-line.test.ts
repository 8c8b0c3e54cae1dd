// `run`'s refusal line when the app cannot start without its sandbox (RUNTIME_NO_SANDBOX). It printed
// "${why}, but ..." whatever the choice: "undefined, but ..." for an agent not running as root (no reason was
// required of it), and the build hint even when the wrapper was fine and the agent's files lay in more directories
// than it can make read-only.
import { describe, expect, it } from 'vitest';
import { configFromObject } from '../../src/config.ts';
import { appSandboxChoice, noSandboxLine } from '../../src/runtime/app-sandbox.ts';

describe('noSandboxLine', () => {
  const config = configFromObject({});

  it('says why a root agent requires the sandbox, and how to build the wrapper', () => {
    const line = noSandboxLine(appSandboxChoice(config, 0), config, 'the wrapper is not usable', false);
    expect(line).toMatch(/^the agent runs as root, .*, but the wrapper is not usable \(`node scripts\/build-native\.mjs` builds/);
    expect(line).toContain('set [app] sandbox = false)');
  });

  it('an unprivileged agent has no reason to give, and too many directories need one node_modules, not a build', () => {
    const line = noSandboxLine(appSandboxChoice(config, 1000), config, "the app's sandbox can make 8 directories read-only", true);
    expect(line).not.toContain('undefined');
    expect(line).toMatch(/^the app's sandbox can make 8 directories read-only \(install the agent and its dependencies into one node_modules/);
    expect(line).not.toContain('build-native');
  });

  it('with egress enforced, the opt-out names app_vsock too', () => {
    const egress = configFromObject({ egress: { enabled: true, destinations: ['example.com'] } });
    expect(noSandboxLine(appSandboxChoice(egress, 1000), egress, 'x', false)).toMatch(/^\[egress\] is enabled .*, but x .*set \[app\] sandbox = false with \[egress\] app_vsock = true\)$/);
  });
});
