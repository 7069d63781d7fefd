// The ES module entry: the very module `require('numballoc')` gives (one copy of the native
// state, whichever way it is loaded), loaded with require rather than re-exported with
// `export * from './index.js'`: on Node 20, an error thrown while loading (a missing native
// addon) reached a dynamic import's catch and then still ended the process as uncaught.
// __test__/esm.test.js checks that these names are exactly index.js's.
import { createRequire } from 'node:module'

const numballoc = createRequire(import.meta.url)('./index.js')

export default numballoc
export const {
  loadShared,
  destroyShared,
  inspectShared,
  listShared,
  reclaimShared,
  SharedMemory,
  ConcurrentBitmap,
  ConcurrentQueue,
  MAX_SIZE,
  MAX_QUEUE_CAPACITY,
  Lease,
  PortPool,
  getPort,
  getPortSync,
  releasePort,
  portNumbers,
  RedisAllocator,
  RemoteLease,
  MAX_REDIS_CAPACITY,
  inspectRedis,
  listRedis,
  reclaimRedis,
} = numballoc
