/**
 * The rule for a device ID, in one place. A device ID is the CN of the car's certificate, the username and client ID
 * the broker knows it by, a level of its MQTT topics and the name of its bundle folder, so it is kept plain: 1-64
 * letters, digits, '.', '_' and '-', starting with a letter or a digit (so never `.`, `..`, `+`, `#` or `/`).
 *
 * Some names are reserved and never a device's: the fleet backend's identity and the names of the development PKI's
 * own files (a car called `ca` would have its key written over the CA's). Reserved names are compared
 * case-insensitively, as a file system or an operator reading a log might.
 *
 * Every place that issues or accepts a device identity asks `deviceIdProblem`: the device config, provision and
 * dev-pki, the CA side that signs a car's request, and the embedded broker. A refusal names the rule broken.
 */
import { COMMAND_CA_NAME, DEV_OPERATOR } from './command-pki.js';

export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** The fleet backend's identity (the CN of its certificate, issued by the backend CA, never by the device CA). */
export const BACKEND_IDENTITY = 'backend';
/** The development PKI's CA for backend identities (certs/dev/backend-ca.*). */
export const BACKEND_CA_NAME = 'backend-ca';

/** Names that are never a device's. */
export const RESERVED_IDENTITIES: readonly string[] = [BACKEND_IDENTITY, BACKEND_CA_NAME, 'ca', 'server', COMMAND_CA_NAME, DEV_OPERATOR];

/** Why `id` cannot be a device ID, or null when it can. */
export function deviceIdProblem(id: string): string | null {
  if (id === '') return 'it is empty';
  const bad = [...id].find((c) => !/[A-Za-z0-9._-]/.test(c));
  if (bad !== undefined) return `${JSON.stringify(bad)} is not allowed (letters, digits, '.', '_' and '-' only)`;
  if (id.length > 64) return `it has ${id.length} characters (at most 64)`;
  if (!DEVICE_ID_PATTERN.test(id)) return 'it must start with a letter or a digit';
  const lower = id.toLowerCase();
  if (RESERVED_IDENTITIES.includes(lower))
    return `'${lower}' is reserved (${lower === BACKEND_IDENTITY ? "the fleet backend's identity" : 'a name of the PKI itself'})`;
  return null;
}

/** Throws RangeError (naming `what` and the rule) unless `id` is a valid device ID. */
export function checkDeviceId(id: string, what = 'device ID'): void {
  const problem = deviceIdProblem(id);
  if (problem !== null) throw new RangeError(`${what} ${JSON.stringify(id)} cannot be a device ID: ${problem}`);
}
