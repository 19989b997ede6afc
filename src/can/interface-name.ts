/**
 * What the kernel accepts as a network interface name (dev_valid_name), checked where a name comes in (the device
 * config, command-line options), so that a typo is a clear error, not a socket that silently never opens. Pure
 * checks: nothing here touches the system or throws.
 */
import { z } from 'zod';

/** 1-15 bytes, no '/', ':' or whitespace, not '.' or '..'. */
export const INTERFACE_NAME_PATTERN = /^(?!\.\.?$)[^\s/:]{1,15}$/;

/** Why `name` cannot be a network interface name, or null. */
export function interfaceNameProblem(name: string): string | null {
  if (!INTERFACE_NAME_PATTERN.test(name)) {
    return `not a network interface name: ${JSON.stringify(name)} (1-15 characters, no '/', ':' or whitespace, not '.' or '..')`;
  }
  // The kernel counts bytes: a name of 15 characters with non-ASCII ones in it is too long.
  const bytes = Buffer.byteLength(name, 'utf8');
  return bytes > 15 ? `not a network interface name: ${JSON.stringify(name)} is ${bytes} bytes, the kernel allows 15` : null;
}

/** An interface name in a config file. */
export const interfaceNameSchema = z
  .string()
  .regex(INTERFACE_NAME_PATTERN, { message: "not a network interface name (1-15 characters, no '/', ':' or whitespace, not '.' or '..')" })
  .superRefine((name, ctx) => {
    if (!INTERFACE_NAME_PATTERN.test(name)) return; // reported by the pattern
    const problem = interfaceNameProblem(name);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });
