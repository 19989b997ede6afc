/**
 * The `readIntervalMs` of a bus source that hands frames over in batches (socketcan, replay): one schema, one default
 * (SOURCE_READ_INTERVAL_MS), each plug-in saying in its own words what the interval does for it. Out of range or not
 * an integer: the config is refused, naming the field.
 */
import { z } from 'zod';
import { SOURCE_READ_INTERVAL_MS } from '../../can/frame.js';

export function readIntervalMsSchema(what: string) {
  return z.number().int().min(0).max(1000).default(SOURCE_READ_INTERVAL_MS).describe(`${what} Default ${SOURCE_READ_INTERVAL_MS}; 0: on every frame.`);
}
