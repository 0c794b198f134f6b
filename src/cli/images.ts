// Image files -> the uint8 (C, H, W) layout a model takes, with sharp, decoded as the image-folder
// loader decodes training images: alpha dropped, resized to the model's input size with fit 'cover'
// (scaled to fill, centre-cropped), grayscale for 1-channel models, sRGB (gray replicated) for 3.
import fs from 'node:fs';

import sharp from 'sharp';

import { DataError, UsageError } from '../errors.js';

/** Decodes one image file into `out` (C*H*W bytes, CHW). */
export async function decodeImageInto(file: string, out: Uint8Array, c: number, h: number, w: number): Promise<void> {
  if (!fs.existsSync(file)) throw new UsageError(`${file}: no such image file`);
  if (c !== 1 && c !== 3)
    throw new DataError(`${file}: models with ${c} input channels take no image files (1 or 3 channels only)`);
  let data: Buffer, info: { width: number; height: number; channels: number };
  try {
    let img = sharp(file, { failOn: 'error' }).removeAlpha().resize(w, h, { fit: 'cover' });
    img = c === 1 ? img.grayscale() : img.toColourspace('srgb');
    ({ data, info } = await img.raw().toBuffer({ resolveWithObject: true }));
  } catch (err) {
    throw new DataError(
      `${file}: cannot decode the image (${(err as Error).message.split('\n')[0]}); the file is corrupt, truncated or not an image`,
      file,
    );
  }
  const got = info.channels as number;
  if (info.width !== w || info.height !== h || (got !== c && !(c === 3 && got === 1)))
    throw new DataError(`${file}: decoded to ${info.width}x${info.height}x${got} instead of ${w}x${h}x${c}`);
  const hw = h * w;
  for (let p = 0; p < hw; ++p) for (let ch = 0; ch < c; ++ch) out[ch * hw + p] = data[p * got + (got === 1 ? 0 : ch)];
}

/** Decodes files into one (n, C, H, W) uint8 batch. */
export async function decodeImages(files: string[], c: number, h: number, w: number): Promise<Uint8Array> {
  const per = c * h * w;
  const images = new Uint8Array(files.length * per);
  for (let i = 0; i < files.length; ++i)
    await decodeImageInto(files[i], images.subarray(i * per, (i + 1) * per), c, h, w);
  return images;
}
