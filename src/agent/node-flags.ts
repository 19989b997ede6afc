/**
 * The V8 options the agent's process runs with in production: the systemd unit's ExecStart (src/provision/
 * service-unit.ts), `npm start` (package.json's `start`, kept equal by test/agent/node-flags.test.ts) and the
 * `realrate` benchmark, which measures the agent as a car runs it. They must be on node's command line: V8 sizes
 * its heap when it starts, and v8.setFlagsFromString() later does not change it.
 *
 * `--max-semi-space-size=1`: the young generation stays at 1 MB per semi-space. By default V8 grows it to 16 MB
 * while the agent starts (most of what start-up allocates survives) and keeps it until its memory reducer notices an
 * idle heap, so a car paid some 30 MB of resident memory for garbage it makes at 1-2 MB/s at a saturated bus. A
 * scavenge of 1 MB takes well under a millisecond: about one a second at 8,000 frames/s. `npm run bench -- realrate`
 * measures both sides.
 *
 * Failure: node refuses an option it does not know at start ("bad option"), so a wrong one cannot go unnoticed.
 */
export const AGENT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1'];
