// safetensors (https://github.com/huggingface/safetensors format): 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
// then the raw little-endian data. Loading never runs code; the reader checks every offset, shape
// and dtype against the buffer before touching data, so a hostile file can only be rejected.

export type SafeDtype = 'F32' | 'I64';

export interface SafeTensor {
  dtype: SafeDtype;
  shape: number[];
  data: Float32Array | BigInt64Array;
}

const DTYPE_BYTES: Record<SafeDtype, number> = { F32: 4, I64: 8 };
const MAX_HEADER = 100 * 1024 * 1024;

export function encodeSafetensors(tensors: Map<string, SafeTensor>, metadata: Record<string, string> = {}): Buffer {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  const names = [...tensors.keys()];
  for (const name of names) {
    const t = tensors.get(name)!;
    const bytes = t.data.length * DTYPE_BYTES[t.dtype];
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.data.length)
      throw new Error(`safetensors: tensor ${name} has shape [${t.shape}] but ${t.data.length} values`);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  // Pad the header with spaces so the data starts 8-byte aligned (as the reference writer does).
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const hbytes = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + hbytes.length + offset);
  out.writeBigUInt64LE(BigInt(hbytes.length), 0);
  hbytes.copy(out, 8);
  let pos = 8 + hbytes.length;
  for (const name of names) {
    const t = tensors.get(name)!;
    const src = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    src.copy(out, pos);
    pos += src.length;
  }
  return out;
}

/** Parses and validates; `file` names the source in errors. */
export function decodeSafetensors(
  buf: Uint8Array,
  file: string,
): { tensors: Map<string, SafeTensor>; metadata: Record<string, string> } {
  const bad = (why: string) =>
    new Error(`${file}: not a valid safetensors file (${why}); re-save the checkpoint or use another one`);
  if (buf.length < 8) throw bad(`only ${buf.length} bytes`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const hlen = view.getBigUint64(0, true);
  if (hlen > BigInt(Math.min(MAX_HEADER, buf.length - 8))) throw bad(`header length ${hlen} exceeds the file`);
  const n = Number(hlen);
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(buf.buffer, buf.byteOffset + 8, n).toString('utf8'));
  } catch {
    throw bad('header is not JSON');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw bad('header is not an object');
  const dataStart = 8 + n;
  const dataLen = buf.length - dataStart;
  const tensors = new Map<string, SafeTensor>();
  let metadata: Record<string, string> = {};
  const spans: [number, number, string][] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (
        typeof raw !== 'object' ||
        raw === null ||
        Array.isArray(raw) ||
        !Object.values(raw).every((v) => typeof v === 'string')
      )
        throw bad('__metadata__ must map strings to strings');
      metadata = raw as Record<string, string>;
      continue;
    }
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e !== 'object' || e === null) throw bad(`entry ${name} is not an object`);
    if (e.dtype !== 'F32' && e.dtype !== 'I64') throw bad(`tensor ${name} has unsupported dtype ${String(e.dtype)}`);
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw bad(`tensor ${name} has a bad shape`);
    const off = e.data_offsets;
    if (
      !Array.isArray(off) ||
      off.length !== 2 ||
      !off.every((d) => Number.isSafeInteger(d) && d >= 0) ||
      off[0] > off[1] ||
      off[1] > dataLen
    )
      throw bad(`tensor ${name} has data offsets outside the file`);
    const count = (e.shape as number[]).reduce((a, b) => a * b, 1);
    const esize = DTYPE_BYTES[e.dtype];
    if (off[1] - off[0] !== count * esize)
      throw bad(`tensor ${name}: shape [${e.shape}] needs ${count * esize} bytes, offsets give ${off[1] - off[0]}`);
    spans.push([off[0], off[1], name]);
    // Copy out: aligned, and independent of the file buffer.
    const bytes = Buffer.from(buf.buffer, buf.byteOffset + dataStart + off[0], off[1] - off[0]);
    const copy = new Uint8Array(bytes.length);
    copy.set(bytes);
    const data = e.dtype === 'F32' ? new Float32Array(copy.buffer) : new BigInt64Array(copy.buffer);
    tensors.set(name, { dtype: e.dtype, shape: e.shape as number[], data });
  }
  spans.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < spans.length; ++i)
    if (spans[i][0] < spans[i - 1][1]) throw bad(`tensors ${spans[i - 1][2]} and ${spans[i][2]} overlap`);
  return { tensors, metadata };
}
