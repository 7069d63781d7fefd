// Misuses the compiler must reject. Each line marked `// rejected` must produce exactly one error;
// __test__/types.test.js compiles this file and compares the error lines with the marks.
import { ConcurrentBitmap, SharedMemory, loadShared, destroyShared } from '../..'

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
ConcurrentBitmap.open('x', {}) // rejected
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

export { n, s, r, m, p, v }
