// The data layer's public API.
export { DataError } from '../errors.js';
export {
  subset,
  channelStats,
  classCounts,
  fromArrays,
  checkDataset,
  grayToRgb,
  bytesPerImage,
  type Dataset,
  type DataSplits,
  type ChannelStats,
  type ArrayData,
} from './dataset.js';
export { loadData, loadDataset, detectSource, type LoadDataOptions, type LoadResult, type DataKind } from './load.js';
export {
  loadCifar,
  loadCifar10,
  loadCifar100,
  detectCifar,
  CIFAR10_CLASSES,
  type CifarKind,
  type CifarOptions,
} from './cifar.js';
export {
  loadImageFolder,
  listImageFolder,
  decodeImages,
  resizeDataset,
  sniffGrayscale,
  IMAGE_EXTENSIONS,
  type ImageFolderOptions,
  type ImageFolderResult,
  type LoadProgress,
  type DecodeOptions,
} from './images.js';
export { defaultCacheDir, cacheFileFor, readCache, writeCache, listingChecksum, type CacheStatus } from './cache.js';
export { loadSample, readSampleContainer, SAMPLE_FILE, type SampleOptions, type SampleHeader } from './sample.js';
export { stratifiedSplit, type SplitIndices } from './split.js';
export { dataFingerprint, dataChanges, type DataFingerprint, type SplitFingerprint } from './fingerprint.js';
export { epochOrder, gatherBatch, type Batch } from './batches.js';
