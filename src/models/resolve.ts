// A model option is a zoo name or a path to a JSON model spec (the graph format of spec.ts).
import fs from 'node:fs';

import { loadBinding } from '../binding.js';
import { ConfigError } from '../errors.js';
import { unknownSpecKey, type ModelSpec } from './spec.js';
import { buildModel, MODEL_NAMES, type ZooOptions } from './zoo.js';

export function resolveModelSpec(model: string, o: ZooOptions): ModelSpec {
  if ((MODEL_NAMES as readonly string[]).includes(model)) {
    return buildModel(model, o);
  }
  if (model.endsWith('.json') || fs.existsSync(model)) return readModelSpec(model);
  throw new ConfigError(
    `Expected one of ${MODEL_NAMES.join(', ')} or a path to a JSON model spec for model but received '${model}'`,
  );
}

/**
 * A JSON model spec file, checked whole before anything else runs: the JSON, its keys (unknown
 * ones are typos), then everything the native Model checks (values, ops, inputs, shapes), by
 * building it once. Every problem is a ConfigError naming the file: bad input, exit code 2.
 */
export function readModelSpec(file: string): ModelSpec {
  const fail = (what: string): never => {
    throw new ConfigError(`${file}: ${what}; see docs/models.md for the format`);
  };
  let spec: unknown;
  try {
    spec = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    fail(`cannot read the model spec (${(err as Error).message.replace(/\s+/g, ' ')})`);
  }
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec) || !Array.isArray((spec as ModelSpec).nodes))
    fail('a model spec is a JSON object with "in_channels", "height", "width" and a "nodes" array');
  const unknown = unknownSpecKey(spec as Record<string, unknown>);
  if (unknown) fail(unknown);
  try {
    new (loadBinding().Model)(spec as ModelSpec, 0).dispose();
  } catch (err) {
    fail((err as Error).message.replace(/^dfl-native: /, '').replace(/^Model spec: /, ''));
  }
  return spec as ModelSpec;
}
