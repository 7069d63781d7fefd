'use strict'
// The public API. Each module's calls are documented in index.d.ts. Every export is listed by
// name (no spread), so Node's ESM loader sees all of them: `import { ConcurrentBitmap } from
// 'numballoc'` works as `require('numballoc').ConcurrentBitmap` does.

const {
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
} = require('./lib/regions.js')
const { Lease } = require('./lib/lease.js')
const { PortPool, getPort, getPortSync, releasePort, portNumbers } = require('./lib/ports.js')
const { RedisAllocator, RemoteLease, MAX_REDIS_CAPACITY, inspectRedis, listRedis, reclaimRedis } = require('./lib/redis.js')

module.exports = {
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
}
