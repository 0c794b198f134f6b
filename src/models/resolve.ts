// A model option is a zoo name or a path to a JSON model spec (the graph format of spec.ts).
import fs from 'node:fs';

import { ConfigError } from '../config.js';
import type { ModelSpec } from './spec.js';
import { buildModel, MODEL_NAMES, type ZooOptions } from './zoo.js';

export function resolveModelSpec(model: string, o: ZooOptions): ModelSpec {
  if ((MODEL_NAMES as readonly string[]).includes(model)) return buildModel(model, o);
  if (model.endsWith('.json') || fs.existsSync(model)) {
    let spec: ModelSpec;
    try {
      spec = JSON.parse(fs.readFileSync(model, 'utf8')) as ModelSpec;
    } catch (err) {
      throw new ConfigError(`${model}: cannot read the model spec (${(err as Error).message}); see docs/models.md for the format`);
    }
    if (typeof spec !== 'object' || spec === null || !Array.isArray(spec.nodes))
      throw new ConfigError(`${model}: a model spec needs "in_channels", "height", "width" and a "nodes" array; see docs/models.md`);
    // The native Model validates every node (ops, inputs, shapes) with errors that name the node.
    return spec;
  }
  throw new ConfigError(`Expected one of ${MODEL_NAMES.join(', ')} or a path to a JSON model spec for model but received '${model}'`);
}
