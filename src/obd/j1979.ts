/**
 * SAE J1979 / ISO 15031-5 (OBD-II) requests and responses on plain byte arrays.
 *
 * This is the one place that knows the OBD-II services, the Mode 01 PID table and the DTC and Mode 09 layouts. It
 * knows nothing about transports: the ELM327 driver and OBD-over-CAN (ISO-TP) both hand it the bytes of one ECU's
 * message, starting with the response service byte (e.g. `41 0C 0B B8`), with headers, frame indices and ISO-TP
 * framing already removed.
 *
 * Error contract: a parser either returns a value, returns an `ObdNegativeResponse` (the ECU answered `7F ...`, which
 * is a valid answer, not a failure), or throws an `ObdDecodeError`. Nothing else escapes, whatever the input.
 */

/** Short, truncated or garbage input. `bytes` is the offending message when it was a byte array. */
export class ObdDecodeError extends Error {
  override readonly name = 'ObdDecodeError';
  constructor(
    message: string,
    readonly bytes?: Uint8Array,
  ) {
    super(bytes === undefined ? message : `${message} (in ${toHex(bytes)})`);
  }
}

/** Anything byte-like the transports produce: Buffer, Uint8Array or number[]. */
export type ByteInput = ArrayLike<number>;

export const OBD_SERVICE = {
  currentData: 0x01,
  freezeFrame: 0x02,
  storedDtcs: 0x03,
  clearDtcs: 0x04,
  pendingDtcs: 0x07,
  vehicleInfo: 0x09,
  permanentDtcs: 0x0a,
} as const;

/** Positive responses echo the service with this bit set (0x01 -> 0x41). */
const POSITIVE_RESPONSE_OFFSET = 0x40;
const NEGATIVE_RESPONSE_SID = 0x7f;

/** J1979 lets one CAN request carry at most 6 PIDs in Mode 01. */
export const MAX_PIDS_PER_REQUEST = 6;
/** Mode 02 PIDs travel as (PID, frame) pairs, so only 3 fit the same 7-byte single frame. */
export const MAX_FREEZE_FRAME_PIDS_PER_REQUEST = 3;

// ---------------------------------------------------------------------------------------------------------------
// Small helpers

function hex2(n: number): string {
  return n.toString(16).toUpperCase().padStart(2, '0');
}

/** `41 0C 0B B8`, for messages. */
export function toHex(bytes: ArrayLike<number>): string {
  const parts: string[] = [];
  for (let k = 0; k < bytes.length && k < 64; k++) parts.push(hex2(bytes[k]! & 0xff));
  if (bytes.length > 64) parts.push('…');
  return parts.join(' ');
}

/** Checks that the input really is a byte array: a transport bug must surface here, not as a NaN downstream. */
function toBytes(input: ByteInput): Uint8Array {
  if (input === null || typeof input !== 'object' || typeof input.length !== 'number') {
    throw new ObdDecodeError('input is not a byte array');
  }
  const out = new Uint8Array(input.length);
  for (let k = 0; k < input.length; k++) {
    const v = input[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xff) {
      throw new ObdDecodeError(`input byte ${k} is not a byte: ${String(v)}`);
    }
    out[k] = v;
  }
  return out;
}

function u16(d: Uint8Array, at = 0): number {
  return d[at]! * 256 + d[at + 1]!;
}

function s16(d: Uint8Array, at = 0): number {
  const v = u16(d, at);
  return v >= 0x8000 ? v - 0x10000 : v;
}

/** Percent of full scale, the J1979 "100/255 · A" scaling. */
const percent = (a: number): number => (a * 100) / 255;
/** Signed percent around 128, used by fuel trims and EGR error: -100 … +99.2 %. */
const trimPercent = (a: number): number => ((a - 128) * 100) / 128;
/** Temperatures are offset by 40 so that -40 °C is 0. */
const celsius = (a: number): number => a - 40;
/** Torque percentages are offset by 125. */
const torquePercent = (a: number): number => a - 125;

function enumName(names: Readonly<Record<number, string>>, code: number): string {
  return names[code] ?? `unknown(0x${hex2(code)})`;
}

// ---------------------------------------------------------------------------------------------------------------
// Bitfield values

/** Monitor state for each monitor the vehicle has; monitors it does not have are left out. */
export type Readiness = Record<string, 'complete' | 'incomplete'>;

/** PID 01: MIL, number of stored DTCs and readiness of each monitor since the DTCs were last cleared. */
export interface MonitorStatus {
  milOn: boolean;
  dtcCount: number;
  ignition: 'spark' | 'compression';
  readiness: Readiness;
}

/** PID 41: the same readiness bits, for the current drive cycle only. */
export type DriveCycleMonitorStatus = Omit<MonitorStatus, 'milOn' | 'dtcCount'>;

/** PID 03: up to two fuel systems; null when the system is not present. */
export interface FuelSystemStatus {
  system1: string | null;
  system2: string | null;
}

/** PID 13 / 1D: which oxygen sensors are fitted, as sensor numbers per bank. */
export type O2SensorsPresent = Record<`bank${number}`, number[]>;

/** PIDs 14-1B: narrow-band O2 sensor voltage and the short-term trim it drives (null: sensor not used for trim). */
export interface O2SensorVoltage {
  voltage: number;
  shortTermFuelTrim: number | null;
}

/** PIDs 24-2B (voltage) and 34-3B (current): wide-band O2 sensor. */
export interface O2SensorWideRange {
  equivalenceRatio: number;
  voltage?: number;
  currentMa?: number;
}

export interface EngineTorquePoints {
  idle: number;
  point1: number;
  point2: number;
  point3: number;
  point4: number;
}

export interface MaximumValues {
  equivalenceRatio: number;
  o2SensorVoltage: number;
  o2SensorCurrentMa: number;
  intakeManifoldPressure: number;
}

export type PidValue =
  | number
  | string
  | boolean
  | null
  | readonly number[]
  | MonitorStatus
  | DriveCycleMonitorStatus
  | FuelSystemStatus
  | O2SensorsPresent
  | O2SensorVoltage
  | O2SensorWideRange
  | EngineTorquePoints
  | MaximumValues
  | Record<string, number>;

/** Readiness monitors in bytes C/D of PID 01, by bit; the meaning depends on the ignition type (byte B bit 3). */
const SPARK_MONITORS = [
  'catalyst',
  'heatedCatalyst',
  'evaporativeSystem',
  'secondaryAirSystem',
  'acRefrigerant',
  'oxygenSensor',
  'oxygenSensorHeater',
  'egrSystem',
] as const;
const COMPRESSION_MONITORS = ['nmhcCatalyst', 'noxScrMonitor', null, 'boostPressure', null, 'exhaustGasSensor', 'pmFilter', 'egrVvtSystem'] as const;
const COMMON_MONITORS = ['misfire', 'fuelSystem', 'components'] as const;

function decodeMonitorStatus(d: Uint8Array): MonitorStatus {
  const [a, b, c, e] = [d[0]!, d[1]!, d[2]!, d[3]!];
  const compression = (b & 0x08) !== 0;
  const readiness: Readiness = {};
  // Byte B: bits 0-2 say the monitor exists, bits 4-6 say it has not completed yet.
  COMMON_MONITORS.forEach((name, bit) => {
    if (b & (1 << bit)) readiness[name] = b & (0x10 << bit) ? 'incomplete' : 'complete';
  });
  // Byte C says which monitors exist, byte D which of them have not completed.
  const names = compression ? COMPRESSION_MONITORS : SPARK_MONITORS;
  names.forEach((name, bit) => {
    if (name !== null && c & (1 << bit)) readiness[name] = e & (1 << bit) ? 'incomplete' : 'complete';
  });
  return { milOn: (a & 0x80) !== 0, dtcCount: a & 0x7f, ignition: compression ? 'compression' : 'spark', readiness };
}

const FUEL_SYSTEM_STATES: Record<number, string> = {
  0x01: 'openLoopInsufficientTemperature',
  0x02: 'closedLoop',
  0x04: 'openLoopEngineLoadOrDecel',
  0x08: 'openLoopSystemFailure',
  0x10: 'closedLoopFeedbackFault',
};

const SECONDARY_AIR_STATES: Record<number, string> = {
  0x01: 'upstream',
  0x02: 'downstreamOfCatalyst',
  0x04: 'outsideAtmosphereOrOff',
  0x08: 'pumpOnForDiagnostics',
};

const OBD_STANDARDS: Record<number, string> = {
  1: 'OBD-II (CARB)',
  2: 'OBD (EPA)',
  3: 'OBD and OBD-II',
  4: 'OBD-I',
  5: 'not OBD compliant',
  6: 'EOBD',
  7: 'EOBD and OBD-II',
  8: 'EOBD and OBD',
  9: 'EOBD, OBD and OBD-II',
  10: 'JOBD',
  11: 'JOBD and OBD-II',
  12: 'JOBD and EOBD',
  13: 'JOBD, EOBD and OBD-II',
  17: 'EMD',
  18: 'EMD+',
  19: 'HD OBD-C',
  20: 'HD OBD',
  21: 'WWH OBD',
  23: 'HD EOBD-I',
  24: 'HD EOBD-I N',
  25: 'HD EOBD-II',
  26: 'HD EOBD-II N',
  28: 'OBDBr-1',
  29: 'OBDBr-2',
  30: 'KOBD',
  31: 'IOBD I',
  32: 'IOBD II',
  33: 'HD EOBD-IV',
};

const FUEL_TYPES: Record<number, string> = {
  0: 'notAvailable',
  1: 'gasoline',
  2: 'methanol',
  3: 'ethanol',
  4: 'diesel',
  5: 'lpg',
  6: 'cng',
  7: 'propane',
  8: 'electric',
  9: 'bifuelGasoline',
  10: 'bifuelMethanol',
  11: 'bifuelEthanol',
  12: 'bifuelLpg',
  13: 'bifuelCng',
  14: 'bifuelPropane',
  15: 'bifuelElectric',
  16: 'bifuelElectricAndCombustion',
  17: 'hybridGasoline',
  18: 'hybridEthanol',
  19: 'hybridDiesel',
  20: 'hybridElectric',
  21: 'hybridElectricAndCombustion',
  22: 'hybridRegenerative',
  23: 'bifuelDiesel',
};

/** Bits of one sensor-presence byte, `sensorsPerBank` bits per bank, bank 1 in the low bits. */
function decodeSensorsPresent(a: number, sensorsPerBank: number): O2SensorsPresent {
  const out: O2SensorsPresent = {};
  for (let bank = 0; bank * sensorsPerBank < 8; bank++) {
    const sensors: number[] = [];
    for (let s = 0; s < sensorsPerBank; s++) if (a & (1 << (bank * sensorsPerBank + s))) sensors.push(s + 1);
    out[`bank${bank + 1}`] = sensors;
  }
  return out;
}

/** Equivalence ratio (lambda) scaling of the wide-band sensors and PID 44: 2/65536 per bit. */
const equivalenceRatio = (raw: number): number => (raw * 2) / 65536;

// ---------------------------------------------------------------------------------------------------------------
// The PID table (Mode 01, and Mode 02 freeze frames)

export interface PidDefinition {
  pid: number;
  /** camelCase name used in JSON output. */
  key: string;
  description: string;
  /** Unit of a numeric value; '' for counts, enumerations and bitfields. */
  unit: string;
  /** Number of data bytes after the PID byte. */
  bytes: number;
  /** Data bytes (exactly `bytes` of them) to the value. */
  decode(data: Uint8Array): PidValue;
}

type Row = [pid: number, key: string, description: string, unit: string, bytes: number, decode: (d: Uint8Array) => PidValue];

const rows: Row[] = [
  [0x01, 'monitorStatus', 'Monitor status since DTCs cleared (MIL, DTC count, readiness)', '', 4, decodeMonitorStatus],
  [0x02, 'freezeFrameDtc', 'DTC that caused the freeze frame (null: none)', '', 2, (d) => (u16(d) === 0 ? null : dtcFromBytes(d[0]!, d[1]!))],
  [
    0x03,
    'fuelSystemStatus',
    'Fuel system status',
    '',
    2,
    (d) => ({
      system1: d[0] === 0 ? null : enumName(FUEL_SYSTEM_STATES, d[0]!),
      system2: d[1] === 0 ? null : enumName(FUEL_SYSTEM_STATES, d[1]!),
    }),
  ],
  [0x04, 'engineLoad', 'Calculated engine load', '%', 1, (d) => percent(d[0]!)],
  [0x05, 'coolantTemp', 'Engine coolant temperature', '°C', 1, (d) => celsius(d[0]!)],
  [0x06, 'shortTermFuelTrimBank1', 'Short-term fuel trim, bank 1', '%', 1, (d) => trimPercent(d[0]!)],
  [0x07, 'longTermFuelTrimBank1', 'Long-term fuel trim, bank 1', '%', 1, (d) => trimPercent(d[0]!)],
  [0x08, 'shortTermFuelTrimBank2', 'Short-term fuel trim, bank 2', '%', 1, (d) => trimPercent(d[0]!)],
  [0x09, 'longTermFuelTrimBank2', 'Long-term fuel trim, bank 2', '%', 1, (d) => trimPercent(d[0]!)],
  [0x0a, 'fuelPressure', 'Fuel pressure (gauge)', 'kPa', 1, (d) => 3 * d[0]!],
  [0x0b, 'intakeManifoldPressure', 'Intake manifold absolute pressure', 'kPa', 1, (d) => d[0]!],
  [0x0c, 'rpm', 'Engine speed', 'rpm', 2, (d) => u16(d) / 4],
  [0x0d, 'speed', 'Vehicle speed', 'km/h', 1, (d) => d[0]!],
  [0x0e, 'timingAdvance', 'Ignition timing advance before TDC, cylinder 1', '°', 1, (d) => (d[0]! - 128) / 2],
  [0x0f, 'intakeAirTemp', 'Intake air temperature', '°C', 1, (d) => celsius(d[0]!)],
  [0x10, 'maf', 'Mass air flow rate', 'g/s', 2, (d) => u16(d) / 100],
  [0x11, 'throttlePosition', 'Absolute throttle position', '%', 1, (d) => percent(d[0]!)],
  [0x12, 'secondaryAirStatus', 'Commanded secondary air status', '', 1, (d) => enumName(SECONDARY_AIR_STATES, d[0]!)],
  [0x13, 'o2SensorsPresent', 'Oxygen sensors present (2 banks of 4)', '', 1, (d) => decodeSensorsPresent(d[0]!, 4)],
  [0x1c, 'obdStandard', 'OBD standard the vehicle conforms to', '', 1, (d) => enumName(OBD_STANDARDS, d[0]!)],
  [0x1d, 'o2SensorsPresent4Banks', 'Oxygen sensors present (4 banks of 2)', '', 1, (d) => decodeSensorsPresent(d[0]!, 2)],
  [0x1e, 'ptoActive', 'Auxiliary input status: power take-off active', '', 1, (d) => (d[0]! & 0x01) !== 0],
  [0x1f, 'runTimeSinceStart', 'Run time since engine start', 's', 2, (d) => u16(d)],
  [0x21, 'distanceWithMil', 'Distance travelled with the MIL on', 'km', 2, (d) => u16(d)],
  [0x22, 'fuelRailPressure', 'Fuel rail pressure relative to manifold vacuum', 'kPa', 2, (d) => u16(d) * 0.079],
  [0x23, 'fuelRailGaugePressure', 'Fuel rail gauge pressure (diesel or direct injection)', 'kPa', 2, (d) => u16(d) * 10],
  [0x2c, 'commandedEgr', 'Commanded EGR', '%', 1, (d) => percent(d[0]!)],
  [0x2d, 'egrError', 'EGR error', '%', 1, (d) => trimPercent(d[0]!)],
  [0x2e, 'commandedEvapPurge', 'Commanded evaporative purge', '%', 1, (d) => percent(d[0]!)],
  [0x2f, 'fuelLevel', 'Fuel tank level input', '%', 1, (d) => percent(d[0]!)],
  [0x30, 'warmUpsSinceCodesCleared', 'Warm-ups since DTCs cleared', '', 1, (d) => d[0]!],
  [0x31, 'distanceSinceCodesCleared', 'Distance travelled since DTCs cleared', 'km', 2, (d) => u16(d)],
  // J1979 defines A,B as a two's complement value; some tools read it unsigned, which is wrong below 0 Pa.
  [0x32, 'evapVaporPressure', 'Evaporative system vapour pressure', 'Pa', 2, (d) => s16(d) / 4],
  [0x33, 'barometricPressure', 'Absolute barometric pressure', 'kPa', 1, (d) => d[0]!],
  [
    0x41,
    'monitorStatusThisDriveCycle',
    'Monitor status this drive cycle',
    '',
    4,
    (d) => {
      const { ignition, readiness } = decodeMonitorStatus(d);
      return { ignition, readiness };
    },
  ],
  [0x42, 'controlModuleVoltage', 'Control module voltage', 'V', 2, (d) => u16(d) / 1000],
  [0x43, 'absoluteLoad', 'Absolute load value', '%', 2, (d) => (u16(d) * 100) / 255],
  [0x44, 'commandedEquivalenceRatio', 'Commanded air-fuel equivalence ratio (lambda)', '', 2, (d) => equivalenceRatio(u16(d))],
  [0x45, 'relativeThrottle', 'Relative throttle position', '%', 1, (d) => percent(d[0]!)],
  [0x46, 'ambientAirTemp', 'Ambient air temperature', '°C', 1, (d) => celsius(d[0]!)],
  [0x47, 'absoluteThrottleB', 'Absolute throttle position B', '%', 1, (d) => percent(d[0]!)],
  [0x48, 'absoluteThrottleC', 'Absolute throttle position C', '%', 1, (d) => percent(d[0]!)],
  [0x49, 'acceleratorPedalD', 'Accelerator pedal position D', '%', 1, (d) => percent(d[0]!)],
  [0x4a, 'acceleratorPedalE', 'Accelerator pedal position E', '%', 1, (d) => percent(d[0]!)],
  [0x4b, 'acceleratorPedalF', 'Accelerator pedal position F', '%', 1, (d) => percent(d[0]!)],
  [0x4c, 'commandedThrottleActuator', 'Commanded throttle actuator', '%', 1, (d) => percent(d[0]!)],
  [0x4d, 'timeWithMil', 'Time run with the MIL on', 'min', 2, (d) => u16(d)],
  [0x4e, 'timeSinceCodesCleared', 'Time since DTCs cleared', 'min', 2, (d) => u16(d)],
  [
    0x4f,
    'maximumValues',
    'Maximum equivalence ratio, O2 voltage, O2 current and intake pressure',
    '',
    4,
    (d) => ({
      equivalenceRatio: d[0]!,
      o2SensorVoltage: d[1]!,
      o2SensorCurrentMa: d[2]!,
      intakeManifoldPressure: d[3]! * 10,
    }),
  ],
  [0x50, 'mafMaximum', 'Maximum mass air flow rate', 'g/s', 4, (d) => d[0]! * 10],
  [0x51, 'fuelType', 'Fuel type', '', 1, (d) => enumName(FUEL_TYPES, d[0]!)],
  [0x52, 'ethanolPercent', 'Ethanol fuel percentage', '%', 1, (d) => percent(d[0]!)],
  [0x53, 'evapVaporPressureAbsolute', 'Absolute evaporative system vapour pressure', 'kPa', 2, (d) => u16(d) / 200],
  [0x54, 'evapVaporPressureWide', 'Evaporative system vapour pressure (wide range)', 'Pa', 2, (d) => s16(d)],
  [0x59, 'fuelRailAbsolutePressure', 'Fuel rail absolute pressure', 'kPa', 2, (d) => u16(d) * 10],
  [0x5a, 'relativeAcceleratorPedal', 'Relative accelerator pedal position', '%', 1, (d) => percent(d[0]!)],
  [0x5b, 'hybridBatteryRemaining', 'Hybrid battery pack remaining life', '%', 1, (d) => percent(d[0]!)],
  [0x5c, 'oilTemp', 'Engine oil temperature', '°C', 1, (d) => celsius(d[0]!)],
  [0x5d, 'fuelInjectionTiming', 'Fuel injection timing', '°', 2, (d) => u16(d) / 128 - 210],
  [0x5e, 'fuelRate', 'Engine fuel rate', 'L/h', 2, (d) => u16(d) / 20],
  [0x61, 'driverDemandTorque', "Driver's demand engine torque", '%', 1, (d) => torquePercent(d[0]!)],
  [0x62, 'actualEngineTorque', 'Actual engine torque', '%', 1, (d) => torquePercent(d[0]!)],
  [0x63, 'engineReferenceTorque', 'Engine reference torque', 'Nm', 2, (d) => u16(d)],
  [
    0x64,
    'engineTorquePoints',
    'Engine percent torque at idle and points 1-4',
    '%',
    5,
    (d) => ({
      idle: torquePercent(d[0]!),
      point1: torquePercent(d[1]!),
      point2: torquePercent(d[2]!),
      point3: torquePercent(d[3]!),
      point4: torquePercent(d[4]!),
    }),
  ],
  [0xa6, 'odometer', 'Odometer', 'km', 4, (d) => (d[0]! * 2 ** 24 + d[1]! * 2 ** 16 + d[2]! * 2 ** 8 + d[3]!) / 10],
];

// The families of sensors whose PIDs follow each other.
for (let n = 0; n < 8; n++) {
  rows.push([
    0x14 + n,
    `o2Sensor${n + 1}`,
    `Oxygen sensor ${n + 1}: voltage and short-term fuel trim`,
    'V',
    2,
    (d) => ({
      voltage: d[0]! / 200,
      // B = 0xFF: this sensor is not used to compute the trim.
      shortTermFuelTrim: d[1] === 0xff ? null : trimPercent(d[1]!),
    }),
  ]);
  rows.push([
    0x24 + n,
    `o2Sensor${n + 1}WideRangeVoltage`,
    `Oxygen sensor ${n + 1}: equivalence ratio and voltage`,
    'V',
    4,
    (d) => ({
      equivalenceRatio: equivalenceRatio(u16(d, 0)),
      voltage: (u16(d, 2) * 8) / 65536,
    }),
  ]);
  rows.push([
    0x34 + n,
    `o2Sensor${n + 1}WideRangeCurrent`,
    `Oxygen sensor ${n + 1}: equivalence ratio and current`,
    'mA',
    4,
    (d) => ({
      equivalenceRatio: equivalenceRatio(u16(d, 0)),
      currentMa: u16(d, 2) / 256 - 128,
    }),
  ]);
}
(
  [
    [0x3c, 'catalystTempBank1Sensor1'],
    [0x3d, 'catalystTempBank2Sensor1'],
    [0x3e, 'catalystTempBank1Sensor2'],
    [0x3f, 'catalystTempBank2Sensor2'],
  ] as const
).forEach(([pid, key]) => {
  rows.push([pid, key, `Catalyst temperature, ${key.slice('catalystTemp'.length)}`, '°C', 2, (d) => u16(d) / 10 - 40]);
});
(
  [
    [0x55, 'shortTermSecondaryO2TrimBanks1And3'],
    [0x56, 'longTermSecondaryO2TrimBanks1And3'],
    [0x57, 'shortTermSecondaryO2TrimBanks2And4'],
    [0x58, 'longTermSecondaryO2TrimBanks2And4'],
  ] as const
).forEach(([pid, key]) => {
  const [first, second] = pid <= 0x56 ? ['bank1', 'bank3'] : ['bank2', 'bank4'];
  rows.push([
    pid,
    key,
    `Secondary oxygen sensor trim, ${first} and ${second}`,
    '%',
    2,
    (d) => ({
      [first]: trimPercent(d[0]!),
      [second]: trimPercent(d[1]!),
    }),
  ]);
});

/** The PIDs that report which PIDs are supported, one per block of 32. */
export const SUPPORTED_PID_BLOCKS: readonly number[] = [0x00, 0x20, 0x40, 0x60, 0x80, 0xa0, 0xc0, 0xe0];
for (const block of SUPPORTED_PID_BLOCKS) {
  const last = hex2(Math.min(block + 0x20, 0xff));
  rows.push([block, `pidsSupported${hex2(block)}`, `PIDs supported ${hex2(block + 1)}-${last}`, '', 4, (d) => supportedPidsFromBitmap(block, d)]);
}

/** Mode 01 / Mode 02 PIDs by number, in PID order. */
export const MODE01_PIDS: ReadonlyMap<number, PidDefinition> = new Map(
  rows.sort((x, y) => x[0] - y[0]).map(([pid, key, description, unit, bytes, decode]) => [pid, Object.freeze({ pid, key, description, unit, bytes, decode })]),
);

/** The same definitions by JSON key. */
export const MODE01_PIDS_BY_KEY: ReadonlyMap<string, PidDefinition> = new Map([...MODE01_PIDS.values()].map((def) => [def.key, def]));

/** Decodes the data bytes of one PID. Throws ObdDecodeError for an unknown PID or a wrong data length. */
export function decodePid(pid: number, data: ByteInput): PidValue {
  const def = MODE01_PIDS.get(pid);
  if (def === undefined) throw new ObdDecodeError(`PID 0x${hex2(pid & 0xff)} is not in the J1979 table`);
  const bytes = toBytes(data);
  if (bytes.length !== def.bytes) {
    throw new ObdDecodeError(`PID 0x${hex2(pid)} (${def.key}) needs ${def.bytes} data bytes, got ${bytes.length}`, bytes);
  }
  return def.decode(bytes);
}

/** How a scalar PID maps its raw integer to the value: `value = offset + scale · raw`. */
interface LinearCoding {
  scale: number;
  offset: number;
  bytes: number;
  /** raw is the data bytes read as a two's complement integer (e.g. PID 32), not unsigned. */
  signed: boolean;
}

const linearCodings = new Map<number, LinearCoding | null>();

/**
 * Derives the coding of a PID from its decoder in the table rather than from a second copy of the formulas: the
 * decoder is probed at a few raw values and must be affine in the big-endian integer, unsigned or two's complement.
 * Bitfields, enumerations, multi-value PIDs and PIDs with reserved bytes (PID 50) fail the probe: null.
 */
function linearCoding(def: PidDefinition): LinearCoding | null {
  const cached = linearCodings.get(def.pid);
  if (cached !== undefined) return cached;
  let coding: LinearCoding | null = null;
  const n = def.bytes;
  if (n >= 1 && n <= 4) {
    const span = 2 ** (8 * n);
    const at = (raw: number): number => {
      const d = new Uint8Array(n);
      for (let k = n - 1, r = raw; k >= 0; k--, r = Math.floor(r / 256)) d[k] = r % 256;
      const v = def.decode(d);
      return typeof v === 'number' ? v : Number.NaN;
    };
    const offset = at(0);
    const scale = at(1) - offset;
    if (Number.isFinite(offset) && Number.isFinite(scale) && scale !== 0) {
      const probes = [2, 0x7f, span / 2 - 1, span / 2, span / 2 + 1, span - 2, span - 1];
      const fits = (signed: boolean): boolean =>
        probes.every((raw) => {
          const expected = offset + scale * (signed && raw >= span / 2 ? raw - span : raw);
          return Math.abs(at(raw) - expected) <= 1e-9 * Math.max(1, Math.abs(expected));
        });
      if (fits(false)) coding = { scale, offset, bytes: n, signed: false };
      else if (fits(true)) coding = { scale, offset, bytes: n, signed: true };
    }
  }
  linearCodings.set(def.pid, coding);
  return coding;
}

/** True when `encodePid` can encode this PID (a known PID whose value is one linearly scaled number). */
export function isPidEncodable(pid: number): boolean {
  const def = MODE01_PIDS.get(pid);
  return def !== undefined && linearCoding(def) !== null;
}

/**
 * The inverse of `decodePid` for scalar PIDs, for simulators: physical value to data bytes, rounded to the nearest
 * step and saturated at the ends of the range, as an ECU reports a value beyond what the PID can carry.
 * Throws ObdDecodeError for an unknown or non-scalar PID, or a value that is not a finite number.
 */
export function encodePid(pid: number, value: number): Uint8Array {
  const def = MODE01_PIDS.get(pid);
  if (def === undefined) throw new ObdDecodeError(`PID 0x${hex2(pid & 0xff)} is not in the J1979 table`);
  const coding = linearCoding(def);
  if (coding === null) throw new ObdDecodeError(`PID 0x${hex2(pid)} (${def.key}) is not a single scaled number`);
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new ObdDecodeError(`PID 0x${hex2(pid)} (${def.key}): ${String(value)} is not a finite number`);
  }
  const span = 2 ** (8 * coding.bytes);
  const [min, max] = coding.signed ? [-span / 2, span / 2 - 1] : [0, span - 1];
  let raw = Math.round((value - coding.offset) / coding.scale);
  raw = raw < min ? min : raw > max ? max : raw;
  if (raw < 0) raw += span;
  const out = new Uint8Array(coding.bytes);
  for (let k = coding.bytes - 1; k >= 0; k--, raw = Math.floor(raw / 256)) out[k] = raw % 256;
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Supported-PID bitmaps

/**
 * Decodes the answer to PID 00/20/40…: bit 7 of A is PID block+1, bit 0 of D is PID block+0x20.
 * The last one (block+0x20) is the next block's own PID: it is included, as the ECU does report it as supported.
 */
export function supportedPidsFromBitmap(block: number, data: ByteInput): number[] {
  if (!SUPPORTED_PID_BLOCKS.includes(block)) throw new ObdDecodeError(`0x${hex2(block & 0xff)} is not a supported-PIDs PID`);
  const d = toBytes(data);
  if (d.length !== 4) throw new ObdDecodeError(`supported-PIDs bitmap needs 4 bytes, got ${d.length}`, d);
  const pids: number[] = [];
  for (let k = 0; k < 32; k++) {
    if (d[k >> 3]! & (0x80 >> (k & 7))) {
      const pid = block + k + 1;
      // After E0 comes nothing in Mode 01: 0x100 is not a PID, whatever the bit says.
      if (pid <= 0xff) pids.push(pid);
    }
  }
  return pids;
}

/** The next supported-PIDs block to ask for, or null when this bitmap's last bit is clear (or there is none). */
export function nextSupportedPidBlock(block: number, data: ByteInput): number | null {
  const d = toBytes(data);
  if (d.length !== 4) throw new ObdDecodeError(`supported-PIDs bitmap needs 4 bytes, got ${d.length}`, d);
  const next = block + 0x20;
  return d[3]! & 0x01 && SUPPORTED_PID_BLOCKS.includes(next) ? next : null;
}

/**
 * The inverse of `supportedPidsFromBitmap`, for simulators: the 4 data bytes answering PID `block` (also Mode 09
 * info type 00). PIDs outside block+1 … block+0x20 are ignored, so the whole list of an ECU can be passed.
 */
export function encodeSupportedPids(block: number, pids: Iterable<number>): Uint8Array {
  if (!SUPPORTED_PID_BLOCKS.includes(block)) throw new ObdDecodeError(`0x${hex2(block & 0xff)} is not a supported-PIDs PID`);
  const out = new Uint8Array(4);
  for (const pid of pids) {
    const k = pid - block - 1;
    if (Number.isInteger(k) && k >= 0 && k < 32) out[k >> 3]! |= 0x80 >> (k & 7);
  }
  return out;
}

/** Union of the PIDs supported by several ECUs (engine, transmission, hybrid…), sorted, without duplicates. */
export function mergeSupportedPids(perEcu: Iterable<readonly number[]>): number[] {
  const all = new Set<number>();
  for (const list of perEcu) for (const pid of list) all.add(pid);
  return [...all].sort((x, y) => x - y);
}

// ---------------------------------------------------------------------------------------------------------------
// Requests

function checkByte(what: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new ObdDecodeError(`${what} is not a byte: ${v}`);
}

/**
 * One request message: `01 0C 0D` (Mode 01, up to 6 PIDs), `03`, `04`, `07`, `0A` (no PIDs), `09 02` (one info type).
 * Mode 02 needs a frame number per PID: use `buildFreezeFrameRequest`.
 */
export function buildRequest(mode: number, pids: readonly number[] = []): Uint8Array {
  checkByte('mode', mode);
  pids.forEach((pid, k) => checkByte(`PID ${k}`, pid));
  switch (mode) {
    case OBD_SERVICE.currentData:
      if (pids.length < 1 || pids.length > MAX_PIDS_PER_REQUEST) {
        throw new ObdDecodeError(`a Mode 01 request carries 1 to ${MAX_PIDS_PER_REQUEST} PIDs, got ${pids.length}`);
      }
      break;
    case OBD_SERVICE.freezeFrame:
      throw new ObdDecodeError('Mode 02 requests need a frame number: use buildFreezeFrameRequest');
    case OBD_SERVICE.storedDtcs:
    case OBD_SERVICE.clearDtcs:
    case OBD_SERVICE.pendingDtcs:
    case OBD_SERVICE.permanentDtcs:
      if (pids.length !== 0) throw new ObdDecodeError(`Mode ${hex2(mode)} takes no PIDs`);
      break;
    case OBD_SERVICE.vehicleInfo:
      // Several info types per request would be answered by several multi-frame messages interleaved.
      if (pids.length !== 1) throw new ObdDecodeError(`a Mode 09 request carries exactly one info type, got ${pids.length}`);
      break;
    default:
      throw new ObdDecodeError(`Mode ${hex2(mode)} is not an OBD-II service this module builds`);
  }
  return Uint8Array.from([mode, ...pids]);
}

/** Splits any number of Mode 01 PIDs into requests of at most 6, in the given order. */
export function buildMode01Requests(pids: readonly number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let k = 0; k < pids.length; k += MAX_PIDS_PER_REQUEST) {
    out.push(buildRequest(OBD_SERVICE.currentData, pids.slice(k, k + MAX_PIDS_PER_REQUEST)));
  }
  return out;
}

/** `02 PID frame [PID frame …]`, up to 3 PIDs of one freeze frame (frame 0 is the one J1979 requires). */
export function buildFreezeFrameRequest(pids: readonly number[], frame = 0): Uint8Array {
  checkByte('frame', frame);
  pids.forEach((pid, k) => checkByte(`PID ${k}`, pid));
  if (pids.length < 1 || pids.length > MAX_FREEZE_FRAME_PIDS_PER_REQUEST) {
    throw new ObdDecodeError(`a Mode 02 request carries 1 to ${MAX_FREEZE_FRAME_PIDS_PER_REQUEST} PIDs, got ${pids.length}`);
  }
  return Uint8Array.from([OBD_SERVICE.freezeFrame, ...pids.flatMap((pid) => [pid, frame])]);
}

/** Mode 04: clears DTCs, freeze frames and readiness. Only built here; sending it is a deliberate user action. */
export function buildClearDtcsRequest(): Uint8Array {
  return buildRequest(OBD_SERVICE.clearDtcs);
}

// ---------------------------------------------------------------------------------------------------------------
// Negative responses

const NRC_NAMES: Record<number, string> = {
  0x10: 'generalReject',
  0x11: 'serviceNotSupported',
  0x12: 'subFunctionNotSupported',
  0x13: 'incorrectMessageLength',
  0x14: 'responseTooLong',
  0x21: 'busyRepeatRequest',
  0x22: 'conditionsNotCorrect',
  0x24: 'requestSequenceError',
  0x31: 'requestOutOfRange',
  0x33: 'securityAccessDenied',
  0x78: 'responsePending',
  0x7e: 'subFunctionNotSupportedInActiveSession',
  0x7f: 'serviceNotSupportedInActiveSession',
};

/** `7F <service> <NRC>`: the ECU understood the request and refused it (or asks for patience). */
export class ObdNegativeResponse {
  readonly kind = 'negative' as const;
  /** NRC name, e.g. `requestOutOfRange`; `unknown(0xNN)` for codes J1979/ISO 14229 do not define here. */
  readonly nrcName: string;
  constructor(
    /** Service of the refused request (0x01, not 0x41). */
    readonly service: number,
    readonly nrc: number,
  ) {
    this.nrcName = enumName(NRC_NAMES, nrc);
  }

  /** 0x78: the real answer follows later; keep waiting (the transport extends its timeout). */
  get isPending(): boolean {
    return this.nrc === 0x78;
  }

  /**
   * The ECU does not do what was asked. Older ECUs answer a multi-PID Mode 01 request with 0x12 (or 0x31), so a
   * driver seeing this for a multi-PID request retries the PIDs one by one.
   */
  get isUnsupportedRequest(): boolean {
    return this.nrc === 0x11 || this.nrc === 0x12 || this.nrc === 0x31;
  }

  toString(): string {
    return `negative response to service 0x${hex2(this.service)}: ${this.nrcName} (0x${hex2(this.nrc)})`;
  }
}

/**
 * Validates the service byte of a response to `service`. Returns the negative response when the ECU refused, null
 * when `bytes` is a positive response.
 */
function checkResponseHeader(bytes: Uint8Array, service: number, minLength: number): ObdNegativeResponse | null {
  if (bytes.length === 0) throw new ObdDecodeError('empty response');
  if (bytes[0] === NEGATIVE_RESPONSE_SID) {
    if (bytes.length !== 3) throw new ObdDecodeError(`negative response needs 3 bytes, got ${bytes.length}`, bytes);
    if (bytes[1] !== service) {
      throw new ObdDecodeError(`negative response is for service 0x${hex2(bytes[1]!)}, not 0x${hex2(service)}`, bytes);
    }
    return new ObdNegativeResponse(bytes[1], bytes[2]!);
  }
  if (bytes[0] !== service + POSITIVE_RESPONSE_OFFSET) {
    throw new ObdDecodeError(`expected a response to service 0x${hex2(service)} (0x${hex2(service + POSITIVE_RESPONSE_OFFSET)})`, bytes);
  }
  if (bytes.length < minLength) throw new ObdDecodeError(`response too short: ${bytes.length} bytes`, bytes);
  return null;
}

/** Parses a bare `7F svc NRC` message, whatever the service: null if it is not one. */
export function parseNegativeResponse(input: ByteInput): ObdNegativeResponse | null {
  const bytes = toBytes(input);
  if (bytes[0] !== NEGATIVE_RESPONSE_SID) return null;
  if (bytes.length !== 3) throw new ObdDecodeError(`negative response needs 3 bytes, got ${bytes.length}`, bytes);
  return new ObdNegativeResponse(bytes[1]!, bytes[2]!);
}

// ---------------------------------------------------------------------------------------------------------------
// Mode 01 / Mode 02 responses

export interface PidReading {
  pid: number;
  /** JSON key from the table; null for a PID the table does not know (its data is then kept raw, `value` null). */
  key: string | null;
  unit: string;
  data: Uint8Array;
  value: PidValue;
}

export interface Mode01Response {
  kind: 'currentData';
  readings: PidReading[];
}

export interface FreezeFrameReading extends PidReading {
  frame: number;
}

export interface Mode02Response {
  kind: 'freezeFrame';
  readings: FreezeFrameReading[];
}

/**
 * Reads `PID data` entries from `at` on. A PID the table does not know can only be the last thing in the message,
 * since nothing says how long its data is.
 */
function readPidEntry(bytes: Uint8Array, at: number, headerLength: number): { reading: PidReading; next: number } {
  const pid = bytes[at]!;
  const def = MODE01_PIDS.get(pid);
  const dataStart = at + headerLength;
  if (def === undefined) {
    if (dataStart > bytes.length) throw new ObdDecodeError(`PID 0x${hex2(pid)} entry is truncated`, bytes);
    if (at !== 1) {
      throw new ObdDecodeError(`PID 0x${hex2(pid)} is not in the J1979 table, so the rest of the message cannot be split`, bytes);
    }
    const data = bytes.slice(dataStart);
    return { reading: { pid, key: null, unit: '', data, value: null }, next: bytes.length };
  }
  const end = dataStart + def.bytes;
  if (end > bytes.length) {
    throw new ObdDecodeError(`PID 0x${hex2(pid)} (${def.key}) needs ${def.bytes} data bytes, got ${Math.max(0, bytes.length - dataStart)}`, bytes);
  }
  const data = bytes.slice(dataStart, end);
  return { reading: { pid, key: def.key, unit: def.unit, data, value: def.decode(data) }, next: end };
}

/** `41 PID data [PID data …]`, one or several PIDs per message; or the ECU's `7F 01 NRC`. */
export function parseMode01Response(input: ByteInput): Mode01Response | ObdNegativeResponse {
  const bytes = toBytes(input);
  const negative = checkResponseHeader(bytes, OBD_SERVICE.currentData, 2);
  if (negative) return negative;
  const readings: PidReading[] = [];
  for (let at = 1; at < bytes.length;) {
    const { reading, next } = readPidEntry(bytes, at, 1);
    readings.push(reading);
    at = next;
  }
  return { kind: 'currentData', readings };
}

/** `42 PID frame data [PID frame data …]`: freeze-frame values, decoded with the Mode 01 table. */
export function parseMode02Response(input: ByteInput): Mode02Response | ObdNegativeResponse {
  const bytes = toBytes(input);
  const negative = checkResponseHeader(bytes, OBD_SERVICE.freezeFrame, 3);
  if (negative) return negative;
  const readings: FreezeFrameReading[] = [];
  for (let at = 1; at < bytes.length;) {
    if (at + 1 >= bytes.length) throw new ObdDecodeError('freeze-frame entry without its frame number', bytes);
    const { reading, next } = readPidEntry(bytes, at, 2);
    readings.push({ ...reading, frame: bytes[at + 1]! });
    at = next;
  }
  return { kind: 'freezeFrame', readings };
}

// ---------------------------------------------------------------------------------------------------------------
// DTCs (Modes 03, 07, 0A)

const DTC_LETTERS = ['P', 'C', 'B', 'U'] as const;

/** Two DTC bytes to `P0133`: 2 bits letter, 2 bits first digit, then three hex digits. */
export function dtcFromBytes(a: number, b: number): string {
  checkByte('DTC byte A', a);
  checkByte('DTC byte B', b);
  return `${DTC_LETTERS[a >> 6]}${(a >> 4) & 0x03}${(a & 0x0f).toString(16)}${hex2(b)}`.toUpperCase();
}

/** The inverse, for simulators: `P0133` -> [0x01, 0x33]. */
export function dtcToBytes(code: string): [number, number] {
  const m = /^([PCBU])([0-3])([0-9A-F])([0-9A-F]{2})$/i.exec(code);
  if (!m) throw new ObdDecodeError(`not a DTC: ${JSON.stringify(code)}`);
  const letter = DTC_LETTERS.indexOf(m[1]!.toUpperCase() as (typeof DTC_LETTERS)[number]);
  return [(letter << 6) | (Number(m[2]) << 4) | parseInt(m[3]!, 16), parseInt(m[4]!, 16)];
}

export type DtcService = typeof OBD_SERVICE.storedDtcs | typeof OBD_SERVICE.pendingDtcs | typeof OBD_SERVICE.permanentDtcs;

export interface DtcResponse {
  kind: 'dtcs';
  service: DtcService;
  codes: string[];
}

export interface DtcParseOptions {
  /**
   * ISO 15765-4 (CAN) responses carry the number of DTCs right after the service byte (`43 02 01 33 03 00`);
   * J1850 and ISO 9141/14230 ones do not, and fill unused slots with `00 00`.
   */
  countByte: boolean;
}

/** A Mode 03/07/0A response to its DTCs, in the order the ECU sent them. */
export function parseDtcResponse(service: DtcService, input: ByteInput, options: DtcParseOptions): DtcResponse | ObdNegativeResponse {
  if (service !== 0x03 && service !== 0x07 && service !== 0x0a) throw new ObdDecodeError(`0x${hex2(service & 0xff)} is not a DTC service`);
  const bytes = toBytes(input);
  const negative = checkResponseHeader(bytes, service, options.countByte ? 2 : 1);
  if (negative) return negative;
  let at = 1;
  let expected: number | null = null;
  if (options.countByte) expected = bytes[at++]!;
  const body = bytes.length - at;
  if (body % 2 !== 0) throw new ObdDecodeError(`DTC data has an odd length (${body} bytes)`, bytes);
  const codes: string[] = [];
  for (; at < bytes.length; at += 2) {
    const a = bytes[at]!;
    const b = bytes[at + 1]!;
    // 00 00 is padding, never a code (P0000 does not exist).
    if (a === 0 && b === 0) continue;
    if (expected !== null && codes.length === expected) {
      throw new ObdDecodeError(`more DTCs than the count byte announces (${expected})`, bytes);
    }
    codes.push(dtcFromBytes(a, b));
  }
  if (expected !== null && codes.length !== expected) {
    throw new ObdDecodeError(`count byte announces ${expected} DTCs, the message holds ${codes.length}`, bytes);
  }
  return { kind: 'dtcs', service, codes };
}

// ---------------------------------------------------------------------------------------------------------------
// Mode 09: vehicle information

export const VEHICLE_INFO = { vin: 0x02, calibrationIds: 0x04, cvns: 0x06 } as const;

/** Data bytes after `49 <infoType>`. */
function vehicleInfoPayload(bytes: Uint8Array, infoType: number): Uint8Array | ObdNegativeResponse {
  const negative = checkResponseHeader(bytes, OBD_SERVICE.vehicleInfo, 2);
  if (negative) return negative;
  if (bytes[1] !== infoType) {
    throw new ObdDecodeError(`expected info type 0x${hex2(infoType)}, got 0x${hex2(bytes[1]!)}`, bytes);
  }
  return bytes.subarray(2);
}

const isPrintableAscii = (c: number): boolean => c >= 0x20 && c <= 0x7e;

/**
 * `49 02 [01] <17 ASCII>`. On CAN a count byte (number of data items, 01) precedes the VIN; legacy protocols pad
 * the first message with 00 bytes instead, and some ECUs pad short fields at the end: NULs at either end are dropped.
 */
export function parseVinResponse(input: ByteInput): string | ObdNegativeResponse {
  const bytes = toBytes(input);
  const payload = vehicleInfoPayload(bytes, VEHICLE_INFO.vin);
  if (payload instanceof ObdNegativeResponse) return payload;
  let start = 0;
  let end = payload.length;
  // 0x01 can never be a VIN character, so a leading one is always the count byte.
  if (payload[0] === 0x01) start++;
  while (start < end && payload[start] === 0) start++;
  while (end > start && payload[end - 1] === 0) end--;
  const vin = payload.subarray(start, end);
  if (vin.length !== 17) throw new ObdDecodeError(`VIN must be 17 characters, got ${vin.length}`, bytes);
  // Letters and digits only: anything else means the message was not a VIN or was garbled.
  for (const c of vin) {
    const ok = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
    if (!ok) throw new ObdDecodeError(`VIN holds a non-alphanumeric byte 0x${hex2(c)}`, bytes);
  }
  return String.fromCharCode(...vin);
}

/**
 * Splits a Mode 09 payload into `itemLength`-byte items. The item count byte (CAN) is recognised by the length:
 * `1 + n·itemLength` bytes carry it, `n·itemLength` do not.
 */
function vehicleInfoItems(bytes: Uint8Array, payload: Uint8Array, itemLength: number): Uint8Array[] {
  let items = payload;
  if (payload.length % itemLength === 1) {
    const count = payload[0]!;
    items = payload.subarray(1);
    if (count * itemLength !== items.length) {
      throw new ObdDecodeError(`count byte announces ${count} items of ${itemLength} bytes, got ${items.length} bytes`, bytes);
    }
  } else if (payload.length % itemLength !== 0) {
    throw new ObdDecodeError(`payload of ${payload.length} bytes is not made of ${itemLength}-byte items`, bytes);
  }
  const out: Uint8Array[] = [];
  for (let k = 0; k < items.length; k += itemLength) out.push(items.subarray(k, k + itemLength));
  return out;
}

/** `49 04 [n] <16-byte ASCII>…`: calibration IDs, NUL padding removed. */
export function parseCalibrationIdsResponse(input: ByteInput): string[] | ObdNegativeResponse {
  const bytes = toBytes(input);
  const payload = vehicleInfoPayload(bytes, VEHICLE_INFO.calibrationIds);
  if (payload instanceof ObdNegativeResponse) return payload;
  return vehicleInfoItems(bytes, payload, 16).map((item) => {
    let end = item.length;
    while (end > 0 && item[end - 1] === 0) end--;
    const text = item.subarray(0, end);
    for (const c of text) if (!isPrintableAscii(c)) throw new ObdDecodeError(`calibration ID holds a non-ASCII byte 0x${hex2(c)}`, bytes);
    return String.fromCharCode(...text);
  });
}

/** `49 06 [n] <4 bytes>…`: calibration verification numbers as 8-digit hex strings. */
export function parseCvnResponse(input: ByteInput): string[] | ObdNegativeResponse {
  const bytes = toBytes(input);
  const payload = vehicleInfoPayload(bytes, VEHICLE_INFO.cvns);
  if (payload instanceof ObdNegativeResponse) return payload;
  return vehicleInfoItems(bytes, payload, 4).map((item) => Array.from(item, hex2).join(''));
}
