/**
 * Source plug-in `replay`: a recorded `candump -L` log (src/can/replay.ts), replayed with its original timing (times
 * `speed`), once or in a loop. A malformed line is skipped and counted on the bus (`badLogLines`), never fatal; a log
 * that cannot be read fails the run (the config loader has already checked that the file exists). A recording has no
 * bus behind it: setSignal is refused.
 */
import { z } from 'zod';
import { CandumpReplaySource } from '../../can/replay.js';
import { readIntervalMsSchema } from './read-interval.js';
import type { BusSourceType } from './source-type.js';

const schema = z
  .strictObject({
    type: z.literal('replay'),
    file: z.string().min(1).describe('candump -L log to replay, relative to this config file.'),
    speed: z.number().positive().optional().describe('Time factor: 2 replays twice as fast as recorded. Default 1.'),
    loop: z.boolean().optional().describe('Start over when the log ends. Default false.'),
    readIntervalMs: readIntervalMsSchema('Hand frames over in batches at most this often, ms, as a live bus is read (readIntervalMs of socketcan).'),
  })
  .describe('A recorded candump -L log, replayed with its original timing.');

export type ReplaySourceConfig = z.output<typeof schema>;

export const replaySource: BusSourceType<ReplaySourceConfig> = {
  kind: 'bus',
  type: 'replay',
  schema,
  files: ['file'],
  writeRoute: () => ({ to: 'none', reason: 'replays a recording: there is no bus to write to' }),
  create(bus, { decoder }) {
    const source = bus.source;
    const replay = new CandumpReplaySource(source.file, {
      speed: source.speed,
      realtime: true,
      coalesceMs: source.readIntervalMs,
      // The log's interface names (can0, can1…) are the recording's; here the frames belong to this bus.
      busName: () => bus.name,
      onError: () => {
        decoder.badLogLines++;
      },
    });
    return {
      frames: replay,
      obd: null,
      link: () => null,
      async run(sink, signal) {
        do {
          await replay.run(sink, signal);
          // An empty log must not spin: stop once a pass delivers nothing.
        } while (source.loop === true && !signal.aborted && replay.frames > 0);
      },
    };
  },
};
