#!/usr/bin/env bash
# Installs the system tools the host tests drive as real parts: socat (the pseudo-terminal pairs the ELM327 serial
# tests talk through) and mosquitto (the real MQTT broker of the uplink tests, started on free ports; its own system
# service is never used), mosquitto_pub (mosquitto-clients: publishes a signed payload of `telematics-ops sign` as
# another tool would), nftables, conntrack and ping (the NAT router of the carrier-network
# harness in test/net/, and its loss measurement), chromium (renders the local status page headless in
# test/health/), promtool (from Debian's prometheus package: `promtool check metrics` lints a real /metrics scrape
# in test/health/), tmux (the pseudo-terminal of 80 and 200 columns whose screen test/cli/terminal.test.ts reads) and
# gpsd (the live peer of the agent's gpsd source in test/gnss/).
# Idempotent and quiet when everything is there; exits non-zero, naming what is missing, when it
# cannot install. The SocketCAN VM has its own list: scripts/vm/install-deps.sh.
set -euo pipefail

# command the package provides -> package
declare -A provides=(
  [socat]=socat
  [mosquitto]=mosquitto
  # test/cli/ops-tracked.test.ts: a payload of `telematics-ops sign` published by Debian's own client
  [mosquitto_pub]=mosquitto-clients
  [nft]=nftables
  [conntrack]=conntrack
  [ping]=iputils-ping
  [chromium]=chromium
  [promtool]=prometheus
  [tmux]=tmux
  # test/provision/ and test/health/watchdog.test.ts: the unit checked by systemd-analyze verify (systemd-notify
  # comes with it), the notify socket's listener (python3: neither node nor socat reads one datagram at a time), a CA
  # that signs a CSR (openssl)
  [systemd-analyze]=systemd
  [python3]=python3
  [openssl]=openssl
  # test/gnss/gpsd-peer.test.ts: a real gpsd reading the recordings the agent reads, as the peer of its gpsd source
  [gpsd]=gpsd
)
missing=()
for cmd in "${!provides[@]}"; do
  # /usr/sbin too: mosquitto lives there, outside a non-root PATH
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("${provides[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "[test-deps] installing: ${missing[*]}" >&2
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "[test-deps] cannot install (need root and apt-get). Install these Debian packages: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
log=/tmp/telematics-test-apt.log
if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
  apt-get update -q >>"$log" 2>&1 || true
  apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1 || {
    echo "[test-deps] apt-get install ${missing[*]} failed; see $log" >&2
    exit 1
  }
fi
