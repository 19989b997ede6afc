/**
 * What the broker retains on some topics, read with no timer: subscribe at QoS 0, then unsubscribe. The broker sends
 * the retained messages of a subscription right after its SUBACK, before it handles the next packet of the same
 * connection, so once the UNSUBACK is in, every retained message has come (or there was none). QoS 0, so that they
 * are not held back 20 at a time behind the acknowledgements of QoS 1 (mosquitto's max_inflight_messages). Used by
 * the fleet view (every car's status and health) and by the presence check of tracked commands (one car's status).
 *
 * Failure: a filter the broker refuses rejects naming it; a broker that answers neither the subscription nor the
 * unsubscription within `timeoutMs` rejects naming the filters; a connection lost meanwhile rejects with its error
 * (mqtt.js fails the pending request).
 */
import type { MqttClient } from 'mqtt';

export interface RetainedMessage {
  topic: string;
  payload: Buffer;
}

/** The retained messages on `filters`, in the order the broker sent them (a cleared one, empty, is left out). */
export async function readRetained(client: MqttClient, filters: readonly string[], timeoutMs = 30_000): Promise<RetainedMessage[]> {
  const retained: RetainedMessage[] = [];
  const onMessage = (topic: string, payload: Buffer, packet: { retain?: boolean }): void => {
    if (packet.retain && payload.length > 0) retained.push({ topic, payload });
  };
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the broker did not answer the subscription to ${filters.join(', ')} within ${timeoutMs / 1000} s`)), timeoutMs);
  });
  client.on('message', onMessage);
  try {
    await Promise.race([
      (async () => {
        const granted = await client.subscribeAsync([...filters], { qos: 0 });
        const refused = granted.find((g) => g.qos >= 0x80);
        if (refused) throw new Error(`the broker does not let this identity read ${refused.topic} (reason 0x${refused.qos.toString(16)})`);
        // The barrier: the retained copies were all sent before this is answered.
        await client.unsubscribeAsync([...filters]);
      })(),
      late,
    ]);
  } finally {
    clearTimeout(timer);
    client.off('message', onMessage);
  }
  return retained;
}
