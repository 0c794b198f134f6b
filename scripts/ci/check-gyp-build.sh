#!/usr/bin/env bash
# Builds the addon with node-gyp from binding.gyp in a scratch copy and loads it: proves the
# second build system compiles the same source list (native/sources.json) and works.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp -r "$root/native" "$root/binding.gyp" "$root/package.json" "$tmp/"
ln -s "$root/node_modules" "$tmp/node_modules"
gyp="$(dirname "$(dirname "$(command -v npm)")")/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js"
[ -f "$gyp" ] || gyp="$root/node_modules/node-gyp/bin/node-gyp.js"
# Offline: build against the headers npm is configured with (nodedir), as `npm install` would.
nodedir="$(cd "$root" && npm config get nodedir 2>/dev/null || true)"
args=(rebuild -j "$(nproc)" --loglevel=warn)
if [ -z "$nodedir" ] || [ "$nodedir" = "undefined" ] || [ "$nodedir" = "null" ]; then
  # Not configured: use the headers installed with this node, if any (no download needed).
  prefix="$(dirname "$(dirname "$(command -v node)")")"
  [ -f "$prefix/include/node/node_api.h" ] && nodedir="$prefix"
fi
[ -n "$nodedir" ] && [ "$nodedir" != "undefined" ] && [ "$nodedir" != "null" ] && args+=("--nodedir=$nodedir")
(cd "$tmp" && node "$gyp" "${args[@]}" >/dev/null)
DFL_NATIVE_ADDON="$tmp/build/Release/dfl_native.node" node --input-type=module -e "
import { loadBinding } from '$root/dist/binding.js';
const b = loadBinding();
const info = b.runtimeInfo();
if (info.buildSystem !== 'node-gyp') throw new Error('expected the node-gyp build, got ' + info.buildSystem);
const m = new b.Model({in_channels: 1, height: 4, width: 4, nodes: [{op: 'input'}, {op: 'conv', name: 'c', inputs: [0], out_channels: 2, kernel_h: 3, kernel_w: 3, pad_h: 1, pad_w: 1}, {op: 'gap', inputs: [1]}, {op: 'flatten', inputs: [2]}, {op: 'linear', name: 'fc', inputs: [3], out_features: 3, bias: true}]}, 1);
const y = m.forwardSync(new Float32Array(16).fill(1), 1);
if (y.length !== 3 || !y.every(Number.isFinite)) throw new Error('bad forward from the node-gyp build');
console.log('node-gyp build OK:', info.buildSystem, 'gemm', info.gemmKernel);
"
