#!/usr/bin/env node
/**
 * Benchmarks, run with `npm run bench -- <suite> [--json]`. Figures are throughput on one core; each suite also
 * measures a baseline in the same run, so results are read as ratios, not as absolute numbers from another machine.
 */
import { runCommandsBenchmark } from './commands.js';
import { runDecodeBenchmark } from './decode.js';
import { runElm327Benchmark } from './elm327.js';
import { runFleetBenchmark } from './fleet.js';
import { runGnssBenchmark } from './gnss.js';
import { runKeepaliveBenchmark } from './keepalive.js';
import { runPipelineBenchmark } from './pipeline.js';
import { runRealRateBenchmark } from './realrate.js';
import { runSocketCanBenchmark } from './socketcan.js';

const suites: Record<string, (json: boolean) => Promise<void> | void> = {
  commands: runCommandsBenchmark,
  decode: runDecodeBenchmark,
  elm327: runElm327Benchmark,
  fleet: runFleetBenchmark,
  gnss: runGnssBenchmark,
  keepalive: runKeepaliveBenchmark,
  pipeline: runPipelineBenchmark,
  realrate: runRealRateBenchmark,
  socketcan: runSocketCanBenchmark,
};

const args = process.argv.slice(2);
const json = args.includes('--json');
const names = args.filter((a) => !a.startsWith('--'));
const selected = names.length > 0 ? names : Object.keys(suites);
for (const name of selected) {
  const suite = suites[name];
  if (!suite) {
    process.stderr.write(`unknown benchmark '${name}'; available: ${Object.keys(suites).join(', ')}\n`);
    process.exit(2);
  }
  await suite(json);
}
