// The device policy, one for every command (train, study, bench): what `--device` and
// `--precision` become on this build and machine, refused with the reason when they cannot run.
//   cpu    the CPU;
//   cuda   the GPU, or a ConfigError saying why the cuda backend cannot run here;
//   auto   cuda when usable, else the CPU, with a note saying why (the caller logs it).
// bf16 needs a GPU's tensor cores: on the CPU it is refused rather than silently run in fp32.
import type { RuntimeInfo } from './binding.js';
import { ConfigError } from './errors.js';
import type { Device, DeviceName, Precision } from './options.js';

export interface DeviceChoice {
  device: DeviceName;
  /** Why auto fell back to the CPU (null when nothing needs saying). */
  note: string | null;
}

export function chooseDevice(requested: Device, precision: Precision, info: RuntimeInfo): DeviceChoice {
  const cudaUsable = info.usableBackends.includes('cuda');
  if (requested === 'cuda' && !cudaUsable)
    throw new ConfigError(`--device cuda is not available: ${info.cudaStatus}. Use --device cpu (or auto).`);
  const device: DeviceName = requested === 'cpu' || !cudaUsable ? 'cpu' : 'cuda';
  if (precision === 'bf16' && device === 'cpu')
    throw new ConfigError(
      "--precision bf16 runs convolutions and linear layers on a GPU's tensor cores, but this run is on the cpu" +
        (requested === 'cpu' ? '' : ` (cuda: ${info.cudaStatus})`) +
        '. Use --precision fp32 on the CPU.',
    );
  // A CPU-only build says so briefly (`dfl-native info` has the build's reason); a CUDA build that
  // cannot run says why in the driver's words, since that is what the user has to fix.
  const note =
    requested !== 'auto' || cudaUsable
      ? null
      : info.compiledBackends.includes('cuda')
        ? `device auto -> cpu (cuda: ${info.cudaStatus})`
        : 'device auto -> cpu (this build has no CUDA backend; `dfl-native info` says why)';
  return { device, note };
}
