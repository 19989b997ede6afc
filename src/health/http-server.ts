/**
 * The local health endpoint for technicians (node:http): GET / the status page, GET /status JSON, GET /metrics
 * Prometheus text. Anything else is 404; other methods than GET (and HEAD) on these paths are 405.
 *
 * It listens on a loopback address unless the config explicitly allows otherwise, and answers only requests whose Host
 * header is a loopback name or address (or, with allowRemote, an IP literal or the configured host): a web page the
 * technician has open elsewhere cannot reach it through DNS rebinding, since that needs a host *name* of the
 * attacker's. A port already in use is reported once and the agent runs on without the endpoint.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import { isLoopbackHost, type HealthHttpConfig } from './config.js';
import { METRICS_CONTENT_TYPE } from './metrics.js';
import { STATUS_PAGE_CSP, STATUS_PAGE_HTML } from './status-page.js';

/** What the endpoint serves, each built per request: the /status document and the /metrics exposition. */
export interface HealthHttpSource {
  status(): unknown;
  metrics(): string;
}

/** The host part of a Host header: `[::1]:8089` → `::1`, `localhost:8089` → `localhost`. */
function hostOf(header: string): string {
  const bracketed = /^\[([^\]]*)\](?::\d*)?$/.exec(header);
  if (bracketed) return bracketed[1]!;
  const colon = header.lastIndexOf(':');
  // More than one colon without brackets is not a valid Host header; take it whole so that it is refused.
  return colon >= 0 && header.indexOf(':') === colon ? header.slice(0, colon) : header;
}

/**
 * Whether a request with this Host header may be answered. The port is not checked (an SSH tunnel or port forward
 * legitimately changes it); the name is what DNS rebinding controls.
 */
export function hostHeaderAllowed(header: string | undefined, config: Pick<HealthHttpConfig, 'host' | 'allowRemote'>): boolean {
  if (!header) return false;
  const host = hostOf(header.trim()).toLowerCase();
  if (isLoopbackHost(host)) return true;
  if (!config.allowRemote) return false;
  return isIP(host) !== 0 || host === config.host.toLowerCase();
}

const COMMON_HEADERS = {
  'Cache-Control': 'no-store',
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
};

type Route = () => { type: string; body: string; headers?: Record<string, string> };

export class HealthHttpServer {
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly server: Server,
    /** `http://127.0.0.1:8089/` */
    readonly url: string,
  ) {}

  /**
   * Listens on config.host:config.port. Resolves to null, having said why once through `warn`, when it cannot (port in
   * use, address not on this machine): the agent carries on without the endpoint.
   */
  static async start(config: HealthHttpConfig, source: HealthHttpSource, warn: (message: string) => void): Promise<HealthHttpServer | null> {
    const routes: Record<string, Route> = {
      '/': () => ({
        type: 'text/html; charset=utf-8',
        body: STATUS_PAGE_HTML,
        headers: { 'Content-Security-Policy': STATUS_PAGE_CSP, 'X-Frame-Options': 'DENY' },
      }),
      '/status': () => ({ type: 'application/json; charset=utf-8', body: `${JSON.stringify(source.status())}\n` }),
      '/metrics': () => ({ type: METRICS_CONTENT_TYPE, body: source.metrics() }),
    };
    const server = createServer((req, res) => handle(req, res, config, routes));
    const where = `${config.host.includes(':') ? `[${config.host}]` : config.host}:${config.port}`;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(config.port, config.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const reason = code === 'EADDRINUSE' ? 'the port is in use' : code === 'EADDRNOTAVAIL' ? 'no such address on this machine' : (err as Error).message;
      warn(`health: cannot serve the status page on ${where}: ${reason}; running without it`);
      server.close();
      return null;
    }
    // Errors after listening concern single connections (handled by node: 400 and close); never fatal to the agent.
    server.on('error', () => undefined);
    const address = server.address() as AddressInfo;
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    return new HealthHttpServer(server, `http://${host}:${address.port}/`);
  }

  /** Stops listening and ends open connections (a status page keeps one alive). */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    return this.closing;
  }
}

function handle(req: IncomingMessage, res: ServerResponse, config: HealthHttpConfig, routes: Record<string, Route>): void {
  if (!hostHeaderAllowed(req.headers.host, config)) {
    send(res, req, 403, 'text/plain; charset=utf-8', 'forbidden: this endpoint answers only to localhost\n');
    return;
  }
  let pathname: string;
  try {
    pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
  } catch {
    send(res, req, 400, 'text/plain; charset=utf-8', 'bad request\n');
    return;
  }
  const route = Object.hasOwn(routes, pathname) ? routes[pathname] : undefined;
  if (!route) {
    send(res, req, 404, 'text/plain; charset=utf-8', 'not found: try /, /status or /metrics\n');
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    send(res, req, 405, 'text/plain; charset=utf-8', 'method not allowed: GET only\n', { Allow: 'GET, HEAD' });
    return;
  }
  let answer: ReturnType<Route>;
  try {
    answer = route();
  } catch (err) {
    send(res, req, 500, 'text/plain; charset=utf-8', `internal error: ${(err as Error).message}\n`);
    return;
  }
  send(res, req, 200, answer.type, answer.body, answer.headers);
}

function send(res: ServerResponse, req: IncomingMessage, status: number, type: string, body: string, headers: Record<string, string> = {}): void {
  const payload = Buffer.from(body, 'utf8');
  res.writeHead(status, { ...COMMON_HEADERS, ...headers, 'Content-Type': type, 'Content-Length': payload.length });
  res.end(req.method === 'HEAD' ? undefined : payload);
}
