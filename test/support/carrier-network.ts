/**
 * A carrier network made of Linux network namespaces, for the link-health tests (test/net/): a car, a carrier-grade
 * NAT router and a cloud, joined by veth links.
 *
 *   car (wwan0 100.64.0.2) ── (lan0 100.64.0.1) nat (wan0 192.0.2.1) ── (eth0 192.0.2.10) cloud
 *
 * The router masquerades the car behind its WAN address and forgets an idle TCP flow after `natTimeoutS` seconds
 * (its own namespace's `nf_conntrack_tcp_timeout_established`), then drops that flow's packets in both directions
 * without a word, as carrier NATs do: the car's socket stays established and its writes vanish, the cloud's packets
 * never reach the car. The car's link can be cut (dead zone), made lossy, or rate limited.
 *
 * The test process stays in the root namespace, which the harness never changes: programs that belong in the car or
 * the cloud run there through `ip netns exec`. Namespace names carry the test process's pid so parallel test files
 * never collide; destroy() (also run at process exit) removes everything, and create() removes what a crashed run
 * left (namespaces of pids that no longer exist).
 */
import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { promisify } from 'node:util';
import { delay } from './wait.js';

const execFileAsync = promisify(execFile);

export type Place = 'car' | 'nat' | 'cloud';

/** Interface names inside the namespaces (private to each namespace, so they never clash between instances). */
export const CAR_IF = 'wwan0';
export const ROUTER_LAN_IF = 'lan0';
export const ROUTER_WAN_IF = 'wan0';
export const CLOUD_IF = 'eth0';

/** Addresses: the carrier-grade NAT range on the car's side, a documentation range (TEST-NET-1) on the cloud's. */
export const CAR_ADDRESS = '100.64.0.2';
export const ROUTER_LAN_ADDRESS = '100.64.0.1';
export const ROUTER_WAN_ADDRESS = '192.0.2.1';
export const CLOUD_ADDRESS = '192.0.2.10';

const PREFIX = 'tcn';

export interface CarrierNetworkOptions {
  /** Seconds an idle established TCP flow lives in the router's NAT table. */
  natTimeoutS: number;
}

export interface ConntrackEntry {
  protocol: string;
  /** The original direction: the car's address and port, the cloud's. */
  src: string;
  dst: string;
  sport: number | null;
  dport: number | null;
  /** The reply direction's destination: the router's WAN address and the port the NAT mapped the car to. */
  natAddress: string;
  natPort: number | null;
  /** TCP state as conntrack has it (ESTABLISHED ...), null for other protocols. */
  state: string | null;
  /** Seconds left before the router forgets the flow. */
  timeoutS: number;
}

/** Packets seen and dropped by the link rules on one side of the car's link (counted on arrival, so per direction). */
export interface LinkCounters {
  seen: number;
  dropped: number;
  /** Bytes of the packets seen, at the IP level. */
  seenBytes: number;
}

let instances = 0;
const live = new Set<CarrierNetwork>();
process.on('exit', () => {
  for (const net of live) net.destroySync();
});

export class CarrierNetwork {
  readonly carAddress = CAR_ADDRESS;
  readonly routerWanAddress = ROUTER_WAN_ADDRESS;
  readonly cloudAddress = CLOUD_ADDRESS;
  /** The namespace names (`tcn<pid>-<n>-car` ...). */
  readonly ns: Record<Place, string>;
  private readonly children = new Set<ChildProcess>();
  private made = false;
  private dead = false;
  private lossPercent = 0;

  private constructor(readonly natTimeoutS: number) {
    const base = `${PREFIX}${process.pid}-${++instances}`;
    this.ns = { car: `${base}-car`, nat: `${base}-nat`, cloud: `${base}-cloud` };
  }

  /** Builds the three namespaces, the links, the routes and the router's NAT. Fails, saying why, when it cannot. */
  static async create(options: CarrierNetworkOptions): Promise<CarrierNetwork> {
    requireTools();
    removeLeftovers();
    const net = new CarrierNetwork(options.natTimeoutS);
    live.add(net);
    try {
      net.build();
    } catch (err) {
      net.destroySync();
      throw err;
    }
    return net;
  }

  private build(): void {
    const { car, nat, cloud } = this.ns;
    for (const name of [car, nat, cloud]) {
      run('ip', 'netns', 'add', name);
      this.made = true;
      run('ip', '-n', name, 'link', 'set', 'lo', 'up');
    }
    // Both ends are created inside the namespaces: nothing is ever added to the root namespace.
    run('ip', '-n', car, 'link', 'add', CAR_IF, 'type', 'veth', 'peer', 'name', ROUTER_LAN_IF, 'netns', nat);
    run('ip', '-n', nat, 'link', 'add', ROUTER_WAN_IF, 'type', 'veth', 'peer', 'name', CLOUD_IF, 'netns', cloud);
    const address = (ns: string, dev: string, cidr: string): void => {
      run('ip', '-n', ns, 'addr', 'add', cidr, 'dev', dev);
      run('ip', '-n', ns, 'link', 'set', dev, 'up');
    };
    address(car, CAR_IF, `${CAR_ADDRESS}/24`);
    address(nat, ROUTER_LAN_IF, `${ROUTER_LAN_ADDRESS}/24`);
    address(nat, ROUTER_WAN_IF, `${ROUTER_WAN_ADDRESS}/24`);
    address(cloud, CLOUD_IF, `${CLOUD_ADDRESS}/24`);
    run('ip', '-n', car, 'route', 'add', 'default', 'via', ROUTER_LAN_ADDRESS);
    // The cloud gets no route to 100.64.0.0/24: it can only ever answer the router's address, as on the internet.
    this.nft('nat', ROUTER_RULESET);
    this.nft('car', linkTable(CAR_IF));
    this.nft('nat', linkTable(ROUTER_LAN_IF));
    // After the ruleset (which brings conntrack into the namespace); these sysctls are the router namespace's own.
    this.sysctl('nat', 'net.ipv4.ip_forward', '1');
    this.sysctl('nat', 'net.netfilter.nf_conntrack_tcp_timeout_established', String(this.natTimeoutS));
    // Without this, a mid-stream packet of a forgotten flow would be picked up as a new flow and mapped again.
    this.sysctl('nat', 'net.netfilter.nf_conntrack_tcp_loose', '0');
  }

  /** Runs a command in a namespace and returns its stdout; throws with its stderr when it fails. */
  exec(place: Place, cmd: string, ...args: string[]): string {
    return run('ip', 'netns', 'exec', this.ns[place], cmd, ...args);
  }

  /** As exec(), without blocking the event loop (for anything that lasts, such as a ping run). */
  async execAsync(place: Place, cmd: string, ...args: string[]): Promise<string> {
    const { stdout } = await execFileAsync('ip', ['netns', 'exec', this.ns[place], cmd, ...args], { encoding: 'utf8' });
    return stdout;
  }

  /** Starts a program in a namespace (`ip netns exec` execs it, so the child's pid is the program's); destroy() ends it. */
  spawn(place: Place, cmd: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    if (this.dead) throw new Error('the carrier network is destroyed');
    const child = spawn('ip', ['netns', 'exec', this.ns[place], cmd, ...args], { stdio: 'pipe', ...options });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /**
   * How long the router keeps an idle TCP flow from now on (null: back to `natTimeoutS`). A flow takes the new value
   * at its next packet. For tests about something else than the NAT forgetting, whose timing it would race.
   */
  natTimeout(seconds: number | null): void {
    this.sysctl('nat', 'net.netfilter.nf_conntrack_tcp_timeout_established', String(seconds ?? this.natTimeoutS));
  }

  /** The car's link drops everything, both ways (a tunnel, a car park), or works again. */
  deadZone(on: boolean): void {
    this.setLinkRules(on ? 'dead' : 'alive');
  }

  /** Each IPv4 packet crossing the car's link is lost with this probability (in percent), in each direction. */
  loss(percent: number): void {
    if (!(percent >= 0 && percent <= 100)) throw new RangeError(`loss must be 0..100 percent, not ${percent}`);
    this.lossPercent = percent;
    this.setLinkRules('alive');
  }

  /** Limits the car's link to `kbit` kilobits per second each way (a token bucket on both ends); null lifts it. */
  bandwidth(kbit: number | null): void {
    for (const [place, dev] of [
      ['car', CAR_IF],
      ['nat', ROUTER_LAN_IF],
    ] as const) {
      if (kbit === null) {
        try {
          run('ip', 'netns', 'exec', this.ns[place], 'tc', 'qdisc', 'del', 'dev', dev, 'root');
        } catch {
          // no limit was set
        }
        continue;
      }
      // The bucket holds at least one full frame, or nothing bigger than the burst would ever leave.
      const burst = Math.max(1600, Math.ceil((kbit * 1000) / 8 / 100));
      this.exec(place, 'tc', 'qdisc', 'replace', 'dev', dev, 'root', 'tbf', 'rate', `${kbit}kbit`, 'burst', String(burst), 'latency', '400ms');
    }
  }

  /** The router's connection tracking entries (its NAT table). */
  conntrack(): ConntrackEntry[] {
    let out: string;
    try {
      out = this.exec('nat', 'conntrack', '-L');
    } catch (err) {
      throw new Error(`conntrack -L in the router failed: ${(err as Error).message}`);
    }
    return out
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map(parseConntrackLine);
  }

  /** How many flows the router remembers (`protocol` narrows it, e.g. 'tcp'). */
  conntrackCount(protocol?: string): number {
    return this.conntrack().filter((e) => protocol === undefined || e.protocol === protocol).length;
  }

  /** Counters of the link rules: `uplink` counts at the router's end (car → cloud), `downlink` at the car's. */
  linkCounters(): { uplink: LinkCounters; downlink: LinkCounters } {
    return { uplink: this.countersOf('nat'), downlink: this.countersOf('car') };
  }

  /** TCP sockets in a namespace (`ss -tn`), as lines of state, local and peer address. */
  sockets(place: Place): { state: string; local: string; peer: string }[] {
    return this.exec(place, 'ss', '-Htan')
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => {
        const [state = '', , , local = '', peer = ''] = line.trim().split(/\s+/);
        return { state, local, peer };
      });
  }

  /** Ends the programs started in the namespaces and removes the namespaces with all they hold. Idempotent. */
  async destroy(): Promise<void> {
    if (this.dead) return;
    const exits = [...this.children].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGKILL');
        }),
    );
    await Promise.race([Promise.all(exits), delay(3000)]);
    this.destroySync();
  }

  /** destroy() for process exit, where nothing can be awaited. */
  destroySync(): void {
    if (this.dead) return;
    this.dead = true;
    live.delete(this);
    for (const child of this.children) child.kill('SIGKILL');
    if (this.made) for (const name of Object.values(this.ns)) removeNamespace(name);
  }

  private setLinkRules(mode: 'dead' | 'alive'): void {
    for (const place of ['car', 'nat'] as const) {
      const rules = ['flush chain netdev carrier_link ingress', 'add rule netdev carrier_link ingress meta protocol ip counter comment "seen"'];
      if (mode === 'dead') rules.push('add rule netdev carrier_link ingress counter drop comment "dead-zone"');
      else if (this.lossPercent > 0) {
        // Hundredths of a percent, so 0.5 % is possible too.
        const below = Math.round(this.lossPercent * 100);
        rules.push(`add rule netdev carrier_link ingress meta protocol ip numgen random mod 10000 < ${below} counter drop comment "loss"`);
      }
      this.nft(place, rules.join('\n') + '\n');
    }
  }

  private countersOf(place: 'car' | 'nat'): LinkCounters {
    const listing = JSON.parse(this.exec(place, 'nft', '-j', 'list', 'chain', 'netdev', 'carrier_link', 'ingress')) as {
      nftables: { rule?: { comment?: string; expr: Record<string, unknown>[] } }[];
    };
    const result: LinkCounters = { seen: 0, dropped: 0, seenBytes: 0 };
    for (const item of listing.nftables) {
      if (!item.rule) continue;
      const counter = item.rule.expr.find((e) => 'counter' in e)?.counter as { packets: number; bytes: number } | undefined;
      if (!counter) continue;
      if (item.rule.comment === 'seen') {
        result.seen += counter.packets;
        result.seenBytes += counter.bytes;
      } else result.dropped += counter.packets;
    }
    return result;
  }

  private nft(place: Place, ruleset: string): void {
    execFileSync('ip', ['netns', 'exec', this.ns[place], 'nft', '-f', '-'], { input: ruleset, stdio: ['pipe', 'pipe', 'pipe'] });
  }

  private sysctl(place: Place, key: string, value: string): void {
    this.exec(place, 'sysctl', '-q', '-w', `${key}=${value}`);
  }
}

/**
 * The router. Forwarding: replies of known flows pass; a packet conntrack cannot place (a forgotten flow's, since
 * loose pick-up is off) is dropped, in both directions, so neither end ever hears a RST; only the car opens flows.
 * Input: the router itself answers nothing from outside (its TCP stack would otherwise reset a forgotten flow's
 * packets from the cloud, which are addressed to it). NAT: the car leaves under the router's WAN address.
 */
const ROUTER_RULESET = `
table inet carrier_nat {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct state invalid counter drop comment "forgotten"
    iifname "${ROUTER_LAN_IF}" oifname "${ROUTER_WAN_IF}" ct state new accept
  }
  chain input {
    type filter hook input priority filter; policy drop;
    iif "lo" accept
    ct state established,related accept
    ct state invalid counter drop comment "forgotten"
  }
  chain postrouting {
    type nat hook postrouting priority srcnat;
    oifname "${ROUTER_WAN_IF}" masquerade
  }
}
`;

/**
 * The link's impairments, on arrival at each end of the car's link (so each direction is counted once): empty but for
 * a counter until deadZone() or loss() fills it. Before conntrack and routing, as a radio link would be.
 */
function linkTable(dev: string): string {
  return `
table netdev carrier_link {
  chain ingress {
    type filter hook ingress device "${dev}" priority filter;
    meta protocol ip counter comment "seen"
  }
}
`;
}

function run(cmd: string, ...args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${e.stderr?.trim() || e.message}`);
  }
}

/** The tools the harness drives; scripts/install-test-deps.sh installs them (npm test runs it). */
function requireTools(): void {
  if (process.getuid?.() !== 0) throw new Error('the carrier network needs root (network namespaces, nftables)');
  const missing: string[] = [];
  for (const tool of ['ip', 'nft', 'conntrack', 'tc', 'ss', 'sysctl']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool} >/dev/null || test -x /usr/sbin/${tool}`], { stdio: 'ignore' });
    } catch {
      missing.push(tool);
    }
  }
  if (missing.length > 0) {
    throw new Error(`the carrier network needs ${missing.join(', ')} (Debian packages iproute2, nftables, conntrack, procps; scripts/install-test-deps.sh)`);
  }
}

function removeNamespace(name: string): void {
  // Programs still inside would keep the namespace alive after its name is gone; all of them are the harness's.
  try {
    for (const pid of run('ip', 'netns', 'pids', name).split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
  } catch {
    // no such namespace
  }
  try {
    run('ip', 'netns', 'del', name);
  } catch {
    // not there (never made, or removed already)
  }
}

/** Namespaces of an earlier test process that died before its exit handler ran. */
function removeLeftovers(): void {
  const pattern = new RegExp(`^${PREFIX}(\\d+)-\\d+-(car|nat|cloud)\\b`);
  for (const line of run('ip', 'netns', 'list').split('\n')) {
    const match = pattern.exec(line);
    if (!match || Number(match[1]) === process.pid || alive(Number(match[1]))) continue;
    removeNamespace(line.split(' ')[0]!);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** One line of `conntrack -L`, e.g. `tcp 6 4 ESTABLISHED src=100.64.0.2 dst=192.0.2.10 sport=5 dport=8883 src=... [ASSURED] ...`. */
function parseConntrackLine(line: string): ConntrackEntry {
  const words = line.trim().split(/\s+/);
  const fields: Record<string, string[]> = {};
  for (const word of words) {
    const eq = word.indexOf('=');
    if (eq > 0) (fields[word.slice(0, eq)] ??= []).push(word.slice(eq + 1));
  }
  const port = (value: string | undefined): number | null => (value === undefined ? null : Number(value));
  const protocol = words[0] ?? '';
  return {
    protocol,
    timeoutS: Number(words[2]),
    state: protocol === 'tcp' ? (words[3] ?? null) : null,
    src: fields.src?.[0] ?? '',
    dst: fields.dst?.[0] ?? '',
    sport: port(fields.sport?.[0]),
    dport: port(fields.dport?.[0]),
    natAddress: fields.dst?.[1] ?? '',
    natPort: port(fields.dport?.[1]),
  };
}
