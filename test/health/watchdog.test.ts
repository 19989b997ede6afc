/**
 * The agent's systemd notifications (src/health/watchdog.ts) through a real notify socket: a unix datagram socket
 * like the one systemd listens on, bound by a python3 listener (node cannot bind one), its path handed to the agent
 * in NOTIFY_SOCKET as systemd does. The agent is the compiled CLI in a child process, started as the unit starts it.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { createSystemdNotifier, watchdogInterval } from '../../src/health/watchdog.js';
import { runProgram } from '../support/programs.js';
import { repoRoot } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';
import { delay } from '../support/wait.js';

// Prints each datagram on its own line. systemd-notify waits for systemd to close the file descriptor it sends
// with BARRIER=1 (so that systemd reads the message while the sender still exists): closing it answers that.
const LISTENER = `
import array, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("listening", flush=True)
while True:
    data, ancillary, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(16 * 4))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            for fd in fds:
                os.close(fd)
    print(data.decode("utf-8", "replace").replace("\\n", " "), flush=True)
`;

const children: ChildProcess[] = [];
after(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

interface Datagram {
  text: string;
  at: number;
  /** Whether the outbox file existed when the datagram arrived. */
  outboxThere: boolean;
}

test('under systemd the agent says READY=1 once its data path is open, WATCHDOG=1 every WATCHDOG_USEC/2, STOPPING=1 at the end', async () => {
  const dir = makeTempDir('watchdog-');
  const socketPath = path.join(dir, 'notify.sock');
  const outbox = path.join(dir, 'outbox.db');
  const listener = spawn('python3', ['-c', LISTENER, socketPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(listener);
  const received: Datagram[] = [];
  let listening!: () => void;
  const ready = new Promise<void>((resolve) => (listening = resolve));
  let pending = '';
  listener.stdout.setEncoding('utf8');
  listener.stdout.on('data', (chunk: string) => {
    pending += chunk;
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (line === 'listening') listening();
      else received.push({ text: line, at: performance.now(), outboxThere: existsSync(outbox) });
    }
  });
  let listenerErr = '';
  listener.stderr.on('data', (chunk: Buffer) => (listenerErr += chunk.toString()));
  await Promise.race([ready, new Promise((_, reject) => listener.once('exit', () => reject(new Error(`python3 listener died: ${listenerErr}`))))]);

  const config = path.join(dir, 'config.json');
  writeFileSync(
    config,
    JSON.stringify({
      deviceId: 'watchdog-car',
      buses: [{ name: 'can0', dbc: path.join(repoRoot, 'device-config/dbc/demo_vehicle.dbc'), source: { type: 'sim' } }],
      status: { intervalMs: 60_000, signals: [] },
      collection: { rules: [{ name: 'speed', mode: 'periodic', intervalMs: 1000, priority: 3, signals: ['VehicleSpeed'] }] },
      outbox: { path: outbox },
    }),
  );
  // 1 s watchdog: a ping every 0.5 s (the unit's 30 s gives one every 15 s).
  const env: NodeJS.ProcessEnv = { ...process.env, NOTIFY_SOCKET: socketPath, WATCHDOG_USEC: '1000000' };
  delete env.WATCHDOG_PID;
  const agent = await runProgram('telematics-agent', ['run', '--config', config, '--duration', '3'], { env });
  assert.equal(agent.status, 0, agent.stderr);
  // The last systemd-notify may still be on its way when the agent has exited.
  const deadline = performance.now() + 3000;
  while (!received.some((d) => d.text === 'STOPPING=1') && performance.now() < deadline) await delay(50);

  const messages = received.filter((d) => d.text !== 'BARRIER=1');
  const texts = messages.map((d) => d.text);
  assert.equal(texts[0], 'READY=1', texts.join(', '));
  assert.ok(messages[0]!.outboxThere, 'READY=1 only once the outbox is open');
  assert.equal(texts.at(-1), 'STOPPING=1', texts.join(', '));
  const pings = messages.filter((d) => d.text === 'WATCHDOG=1');
  assert.ok(pings.length >= 3, `${pings.length} watchdog pings in a 3 s run: ${texts.join(', ')}`);
  assert.equal(texts.filter((t) => t === 'READY=1').length, 1);
  // Every half second, not faster. Each ping is a systemd-notify process, so one gap may be shortened by a slow spawn
  // before it; the mean gap and the count are not.
  const gaps = pings.slice(1).map((p, i) => p.at - pings[i]!.at);
  const meanGap = (pings.at(-1)!.at - pings[0]!.at) / (pings.length - 1);
  assert.ok(meanGap > 400 && pings.length <= 3 / 0.5 + 2, `${pings.length} pings, gaps ${gaps.map((g) => g.toFixed(0)).join(', ')} ms`);
});

test('without NOTIFY_SOCKET nothing is sent; a watchdog meant for another process is not pinged', () => {
  const said: string[] = [];
  const off = createSystemdNotifier({ env: {}, command: '/nonexistent/systemd-notify', warn: (m) => said.push(m) });
  assert.equal(off.enabled, false);
  off.ready();
  off.stopping();
  assert.deepEqual(said, [], 'nothing spawned, so nothing to complain about');

  assert.equal(watchdogInterval({ WATCHDOG_USEC: '30000000' }, 1234), 15_000);
  assert.equal(watchdogInterval({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '1234' }, 1234), 15_000);
  assert.equal(watchdogInterval({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '99' }, 1234), undefined, 'inherited by a child: not ours');
  assert.equal(watchdogInterval({}, 1234), undefined);
  assert.equal(watchdogInterval({ WATCHDOG_USEC: 'soon' }, 1234), undefined);
});

test('a missing systemd-notify is said once, not at every ping', async () => {
  const said: string[] = [];
  const notifier = createSystemdNotifier({
    env: { NOTIFY_SOCKET: '/run/none', WATCHDOG_USEC: '100000' },
    command: '/nonexistent/systemd-notify',
    warn: (m) => said.push(m),
  });
  notifier.ready();
  await delay(400);
  notifier.stopping();
  await delay(100);
  assert.deepEqual(said, ['systemd: /nonexistent/systemd-notify is not installed: systemd cannot be told the agent is ready or alive, and will stop it']);
});

test('a spawn that throws (ENOMEM) neither crashes the agent nor stops the pings; said once', async () => {
  const said: string[] = [];
  const tried: string[] = [];
  const failing = ((_command: string, args: readonly string[]) => {
    tried.push(args[0]!);
    throw Object.assign(new Error('spawn ENOMEM'), { code: 'ENOMEM', errno: -12, syscall: 'spawn' });
  }) as unknown as typeof spawn;
  // 100 ms watchdog: a ping every 50 ms.
  const notifier = createSystemdNotifier({ env: { NOTIFY_SOCKET: '/run/none', WATCHDOG_USEC: '100000' }, spawn: failing, warn: (m) => said.push(m) });
  notifier.ready();
  await delay(400);
  notifier.stopping();
  assert.equal(tried[0], 'READY=1');
  assert.equal(tried.at(-1), 'STOPPING=1');
  // Every failed ping was counted down, so the next one was still tried.
  const pings = tried.filter((t) => t === 'WATCHDOG=1').length;
  assert.ok(pings >= 4, `${pings} pings tried in 400 ms at one per 50 ms`);
  assert.deepEqual(said, ['systemd: systemd-notify cannot be run: spawn ENOMEM']);
});
