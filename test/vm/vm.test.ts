/**
 * Runs the SocketCAN tests (`*.vmtest.ts`) on a real Linux kernel: this host's kernel has no CAN, so
 * scripts/vm/run-in-vm.sh boots Debian's stock kernel in qemu with vcan and runs them there. The script installs
 * qemu, busybox-static and can-utils when they are missing (apt-get, as root) and fails with the list of missing
 * packages when it cannot: this test then fails too; it is never skipped.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { repoRoot } from '../support/shared.js';

function runInVm(args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(path.join(repoRoot, 'scripts/vm/run-in-vm.sh'), args, {
      cwd: repoRoot,
      // About 4 min on an idle machine; a loaded one (other test files beside it, CPU hogs) slows the emulated CPU
      // several times over, so the guest gets 14 min before qemu is stopped, inside the test's 15.
      env: { ...process.env, VM_TIMEOUT: process.env.VM_TIMEOUT ?? '840' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

describe('SocketCAN tests inside the qemu VM', { timeout: 900_000 }, () => {
  it('every *.vmtest file passes on a real kernel', { timeout: 900_000 }, async (t) => {
    const { code, output } = await runInVm(['node', 'scripts/run-tests.mjs', '--vm']);
    const count = (label: string): number => Number(new RegExp(`^ℹ ${label} (\\d+)$`, 'm').exec(output)?.[1] ?? -1);
    const [tests, pass, fail] = [count('tests'), count('pass'), count('fail')];
    t.diagnostic(`guest: ${tests} tests, ${pass} passed, ${fail} failed`);
    assert.equal(code, 0, `the VM run failed (exit ${code}):\n${output}`);
    assert.ok(tests > 0 && pass === tests && fail === 0, `unexpected guest results:\n${output}`);
  });
});
