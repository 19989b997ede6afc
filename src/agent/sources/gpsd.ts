/**
 * Adapter plug-in `gpsd`: the position from gpsd, for cars where gpsd owns the receiver (src/gnss/gpsd-client.ts). It
 * yields the same values as the `gnss` adapter (`<name>.gnss.<key>`, docs/gnss.md), one fix per epoch.
 *
 * gpsd not running, restarting or closing the connection is a state the agent waits in, never a failure. One log line
 * per change of state, never per fix.
 */
import { z } from 'zod';
import { GPSD_PORT, GpsdClient, type GpsdState } from '../../gnss/gpsd-client.js';
import { positionParts } from './gnss.js';
import type { AdapterType } from './source-type.js';

const schema = z
  .strictObject({
    type: z.literal('gpsd').describe('The kind of adapter: gpsd (its JSON protocol over TCP).'),
    name: z.string().min(1).describe('Name the agent reports this source by, and the prefix of its values (`gnss` gives gnss.gnss.lat; gnss.lat reads it).'),
    host: z.string().min(1).default('127.0.0.1').describe("gpsd's host. Default 127.0.0.1."),
    port: z.number().int().min(1).max(65535).default(GPSD_PORT).describe(`gpsd's TCP port. Default ${GPSD_PORT}.`),
  })
  .describe(
    'The position from gpsd (its JSON protocol), when gpsd owns the receiver. The agent waits for gpsd when it is not running and reconnects when it restarts.',
  );

export type GpsdAdapterConfig = z.output<typeof schema>;

export const gpsdAdapter: AdapterType<GpsdAdapterConfig> = {
  kind: 'adapter',
  type: 'gpsd',
  schema,
  obdPolling: () => null,
  create(config, { log, offer }) {
    const { take, report, status } = positionParts(config.name, offer, log);
    let state: GpsdState = 'idle';
    const client = new GpsdClient({
      host: config.host,
      port: config.port,
      onFix: take,
      onState: (next, detail) => {
        if (next !== 'idle') state = next;
        if (next === 'receiving') report(`watching gpsd at ${client.address}${detail.version ? ` (gpsd ${detail.version})` : ''}`, 'info');
        else if (next === 'missing' && detail.reason) report(`${detail.reason}; retrying`, 'warn');
        else if (next === 'silent') report(`gpsd at ${client.address} sends no reports (no receiver?)`, 'warn');
      },
    });
    return {
      obd: null,
      run: (signal) => client.run(signal),
      status: () => status(state, client.address),
    };
  },
};
