/**
 * Source plug-in `socketcan`: a live kernel CAN interface (src/can/socketcan.ts) with its kernel receive filters, one
 * line per change of interface or controller state (never per frame), and, with the bus's `obd` section, the OBD-II
 * poller that talks to the ECUs over a socket of its own on the same interface.
 *
 * A missing or dead interface is a state, not an error: the source waits and reopens (SocketCanSource does that), the
 * poller pauses while the interface is not open and carries on with the ECUs it knows when it is back. A frame a
 * remote command writes goes out through a socket opened for that frame.
 */
import { z } from 'zod';
import type { CanFilter } from '../../can/bus.js';
import { interfaceNameSchema } from '../../can/interface-name.js';
import { canInterfaceProblem, describeControllerChange, endpointStateReporter } from '../../can/interface-report.js';
import { DEFAULT_RECEIVE_BUFFER_BYTES, SocketCanBus, SocketCanSource, type EndpointState, type EndpointStateChange } from '../../can/socketcan.js';
import { receiveFilters } from '../../dbc/receive-filters.js';
import { ObdCanClient } from '../../obd/can-client.js';
import type { ObdConfig } from '../../obd/config.js';
import { ObdPolling, type ObdConnector } from '../obd-polling.js';
import { readIntervalMsSchema } from './read-interval.js';
import type { BusSourceType } from './source-type.js';

const schema = z
  .strictObject({
    type: z.literal('socketcan'),
    interface: interfaceNameSchema.describe('Kernel CAN interface, e.g. can0 (ip link show type can).'),
    timestamps: z.boolean().default(true).describe('Stamp frames with the kernel receive time rather than the time the agent reads them. Default true.'),
    filter: z
      .enum(['dbc', 'none'])
      .default('dbc')
      .describe(
        'dbc: kernel receive filters pass only the identifiers the bus DBC decodes (frames nobody reads never wake the agent); ' +
          'none: receive every frame. Default dbc.',
      ),
    readIntervalMs: readIntervalMsSchema(
      'On a busy bus, read the frames the kernel has queued at most this often, ms: the agent wakes about 1000/readIntervalMs times a second ' +
        'at any frame rate, and frames reach the collector up to this much later (they keep their kernel time).',
    ),
    receiveBufferBytes: z
      .number()
      .int()
      .min(64 * 1024)
      .max(256 * 1024 * 1024)
      .default(DEFAULT_RECEIVE_BUFFER_BYTES)
      .describe(
        'Socket receive buffer to ask the kernel for, bytes (SO_RCVBUF; a queued frame takes about 1 KiB of it). Without CAP_NET_ADMIN the kernel caps ' +
          `it at net.core.rmem_max, and the agent says so. Frames that do not fit are dropped by the kernel and counted (kernelDrops). Default ${DEFAULT_RECEIVE_BUFFER_BYTES}.`,
      ),
  })
  .describe('A live SocketCAN interface. The agent waits for it when it is missing or down, and reopens it when it comes back.');

export type SocketCanSourceConfig = z.output<typeof schema>;

export const socketcanSource: BusSourceType<SocketCanSourceConfig> = {
  kind: 'bus',
  type: 'socketcan',
  schema,
  obd: true,
  writeRoute: (source) => ({ to: 'interface', interface: source.interface }),
  create(bus, { decoder, log }) {
    const { source } = bus;
    const ifname = source.interface;
    const label = bus.name === ifname ? bus.name : `${bus.name} (${ifname})`;

    // Not fatal: the interface may be renamed or replaced while the agent waits, but a person should hear of it now.
    const problem = canInterfaceProblem(ifname);
    if (problem !== null && !problem.includes('does not exist')) log.warn(`${problem}; the agent keeps trying to open it`);

    let filters: CanFilter[] | undefined;
    if (source.filter === 'dbc') {
      const fromDbc = receiveFilters(decoder.database, { j1939: decoder.database.j1939 });
      // The kernel takes at most 512 filters per socket; an empty list would mean "everything" to the kernel anyway.
      if (fromDbc === null) log.warn(`the DBC needs more kernel receive filters than a socket takes; receiving every frame on ${ifname}`);
      else if (fromDbc.length === 0) log.warn(`the DBC has no messages to filter on; receiving every frame on ${ifname}`);
      else filters = fromDbc;
    }

    // Said once per run, at the first open that gets less than asked (every reopen gets the same from the kernel).
    let bufferWarned = false;
    const warnSmallBuffer = (granted: number): void => {
      if (bufferWarned || granted === 0 || granted >= source.receiveBufferBytes) return;
      bufferWarned = true;
      log.warn(
        `${ifname}: the kernel granted a receive buffer of ${Math.round(granted / 1024)} KiB of the ${Math.round(source.receiveBufferBytes / 1024)} KiB asked ` +
          `(net.core.rmem_max caps it without CAP_NET_ADMIN): a burst of more than about ${Math.round(granted / 1024)} frames while the agent is busy is dropped by the kernel (counted as kernelDrops)`,
      );
    };
    /** The interface's state before the run closed it: what the summary reports. */
    let lastState: EndpointState = 'starting';
    const report = endpointStateReporter((line, level) => log[level](line));
    const frames = new SocketCanSource({
      interface: ifname,
      busName: bus.name,
      timestamps: source.timestamps,
      coalesceMs: source.readIntervalMs,
      receiveBufferBytes: source.receiveBufferBytes,
      ...(filters ? { filters } : {}),
      onStateChange: (change) => {
        if (change.state !== 'closed') lastState = change.state;
        report(change);
        if (change.receiveBufferBytes !== undefined) warnSmallBuffer(change.receiveBufferBytes);
      },
      // Every change of the controller's error state, back to error-active included: a warning, as it always was.
      onControllerState: (change) => log.warn(describeControllerChange(ifname, change)),
    });
    const obd = bus.obd ? new ObdPolling(bus.obd, canObdConnection(ifname, bus.obd, source.timestamps), log, 'the interface') : null;
    return {
      frames,
      obd,
      run: (sink, signal) => frames.run(sink, signal),
      link() {
        const { health } = frames;
        // The controller state only means something while the socket is open.
        const open = frames.state === 'open';
        return {
          state: lastState,
          controllerState: health.state,
          errorFrames: health.counters.errorFrames,
          kernelDrops: health.kernelDrops,
          // Drops are named only once there are some: the usual line stays short.
          text: `${label} ${frames.state}${open ? `, ${health.state}` : ''}, ${health.counters.errorFrames} error frames${health.kernelDrops > 0 ? `, ${health.kernelDrops} frames dropped by the kernel (receive buffer full)` : ''}`,
        };
      },
    };
  },
};

/** OBD over ISO 15765-4 on a SocketCAN interface: the link is up while the interface is open. */
function canObdConnection(ifname: string, config: ObdConfig, timestamps: boolean): ObdConnector {
  return (onLinkChange) => {
    // Its own bus object: the poller's endpoint reports to the poller, not to the log (the source already says when
    // the interface comes and goes).
    const bus = new SocketCanBus(ifname, { timestamps, onStateChange: (change: EndpointStateChange) => onLinkChange(change.state === 'open') });
    const client = new ObdCanClient(bus, { addressing: config.addressing, ...(config.p2Ms ? { p2Ms: config.p2Ms } : {}) });
    return { reader: client, close: () => client.close() };
  };
}
