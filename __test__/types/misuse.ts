// Misuses the compiler must reject. Each line marked `// rejected` must produce exactly one error;
// __test__/types.test.js compiles this file and compares the error lines with the marks.
import { ConcurrentBitmap, ConcurrentQueue, SharedMemory, PortPool, loadShared, destroyShared, getPort, portNumbers, inspectShared, RedisAllocator } from '../..'

const mem = loadShared('typed-misuse', 128)
loadShared(42, 128) // rejected
loadShared('x', '128') // rejected
loadShared('x', 128, { mode: '600' }) // rejected
loadShared('x', 128, { create: 'yes' }) // rejected
loadShared('x', 128, { size: 12 }) // rejected
new SharedMemory() // rejected
mem.size = 3 // rejected
const bitmap = new ConcurrentBitmap(mem)
bitmap.max = 10 // rejected
new ConcurrentBitmap('mem') // rejected
loadShared('x', 8, { tag: 5 }) // rejected
ConcurrentBitmap.open('x', { capacity: '8' }) // rejected
bitmap.free('3') // rejected
bitmap.free() // rejected
const n: number = bitmap.tryAllocate() // rejected
const s: string = bitmap.allocate() // rejected
destroyShared(7) // rejected
new ConcurrentBitmap(mem, 10, { policy: 'best' }) // rejected
bitmap.policy = 'lowest' // rejected
const r: number = bitmap.tryAllocateInRange(1, 5) // rejected
bitmap.allocateBlock('4') // rejected
bitmap.freeMany(3) // rejected
const m: string[] = bitmap.allocateMany(2) // rejected

const p: number = bitmap.holderOf(1).pid // rejected
loadShared('x', 8, { holders: 'yes' }) // rejected
mem.tracksHolders = false // rejected

const lease = bitmap.acquire()
lease.value = 3 // rejected
const v: string = lease.value // rejected
bitmap.close({ release: 'yes' }) // rejected

new PortPool() // rejected
PortPool.open('x', { from: 3000 }) // rejected
PortPool.open('x', { from: 3000, to: '3100' }) // rejected
PortPool.open('x', { from: 3000, to: 3100 }).then((pool) => {
  const port: string = pool.from // rejected
  pool.release('3000') // rejected
  pool.getPort({ port: '3000' }) // rejected
  pool.acquire().then((lease) => lease.port) // rejected
})
getPort({ exclude: 3000 }) // rejected
portNumbers('1', 2) // rejected
const c: string = inspectShared('x').inUse // rejected

export { n, s, r, m, p, v, c }
ConcurrentQueue.open('q') // rejected
ConcurrentQueue.open('q', { capacity: '8' }) // rejected
const queue = ConcurrentQueue.open('q', { capacity: 8 })
queue.allocateBlock(2) // rejected
queue.policy // rejected
const w: string[] = queue.waiting() // rejected
new ConcurrentQueue(mem, 8) // rejected
RedisAllocator.open('r', { capacity: 8 }) // rejected
RedisAllocator.open('r', { redis: 42, capacity: 8 }) // rejected
RedisAllocator.open('r', { redis: 'redis://x', capacity: 8, policy: 'first' }) // rejected
RedisAllocator.open('r', { redis: 'redis://x', capacity: 8 }).then((ids) => {
  const n: number = ids.allocate() // rejected
  ids.max = 3 // rejected
  const tokenText: string = ids.acquire().then((lease) => lease.token) // rejected
  ids.removeAllListeners('gone') // rejected
  void n
  void tokenText
})
new RedisAllocator() // rejected
