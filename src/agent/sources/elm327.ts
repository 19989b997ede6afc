/**
 * An ELM327 adapter in `telematics-agent run`: kept connected (Elm327Client.start reopens and re-initialises it after
 * an unplug or a hang), its PIDs polled while it is ready, one log line per change of its state, never per request.
 */
import type { ObdAdapterConfig } from '../config/device-config.js';
import { Elm327Client, type Elm327Info, type Elm327State } from '../obd/elm327.js';
import { ObdPolling, type ObdConnector } from './live-bus.js';

type Warn = (message: string) => void;

function describeInfo(info: Elm327Info): string {
  return `${info.device ?? 'ELM327'} v${info.version} at ${info.baudRate} baud, ${info.protocol.description}${info.multiPid ? '' : ', one PID per request'}`;
}

export class LiveObdAdapter {
  readonly obd: ObdPolling;
  /** The adapter's state when the run stopped: what the summary reports. */
  lastState: Elm327State = 'idle';
  private info: Elm327Info | null = null;

  constructor(
    readonly config: ObdAdapterConfig,
    warn: Warn,
  ) {
    const say = (message: string): void => warn(`${config.name}: ${message}`);
    let lastReport = '';
    const connector: ObdConnector = (onLinkChange) => {
      const client = new Elm327Client({
        port: config.port,
        protocol: config.protocol,
        ...(config.baudRate !== undefined ? { baudRate: config.baudRate } : {}),
      });
      client.onStateChange((state, detail) => {
        if (state !== 'closed') this.lastState = state;
        onLinkChange(state === 'ready');
        if (detail.info) this.info = detail.info;
        // One line per change that means something to a person: ready, or why not (the same failure only once).
        let report: string | null = null;
        if (state === 'ready' && detail.info) report = `adapter ready on ${config.port}: ${describeInfo(detail.info)}`;
        else if (state === 'idle' && detail.error) report = `adapter on ${config.port}: ${detail.error.message}; reconnecting`;
        if (report !== null && report !== lastReport) {
          lastReport = report;
          say(report);
        }
      });
      client.start();
      return { reader: client, close: () => client.close() };
    };
    this.obd = new ObdPolling(config, connector, say, 'the adapter');
  }

  /** `obd ready (ELM327 v1.5)`. */
  statusText(): string {
    const adapter = this.info ? ` (${this.info.device ?? 'ELM327'} v${this.info.version})` : '';
    return `${this.config.name} ${this.lastState}${this.lastState === 'ready' ? adapter : ''}`;
  }
}
