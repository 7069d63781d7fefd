// A typed consumer of the public API: compiles under `tsc --noEmit --strict`.
import {
  Allocator,
  ConcurrentBitmap,
  ConcurrentQueue,
  MAX_SIZE,
  MAX_QUEUE_CAPACITY,
  NumballocErrorCode,
  Holder,
  Lease,
  Policy,
  SharedMemory,
  destroyShared,
  loadShared,
  inspectShared,
  listShared,
  reclaimShared,
  getPortSync,
  PortPool,
  GetPortOptions,
  RegionReport,
  getPort,
  releasePort,
  portNumbers,
  AsyncAllocator,
  RedisAllocator,
  LostListener,
  RemoteLease,
  RedisHolder,
  MAX_REDIS_CAPACITY,
} from '../..'

const mem: SharedMemory = loadShared('typed-consumer', 128, { create: true, mode: 0o600 })
const size: number = mem.size
const name: string = mem.name
const blocks: Uint32Array = mem.blocks()

const allocator: Allocator = new ConcurrentBitmap(mem, 0)
const n: number = allocator.allocate()
allocator.free(n)
const max: number = allocator.max

const ids = ConcurrentBitmap.open('typed-ids', { capacity: 64, directory: '/tmp', policy: 'lowest' })
const policy: Policy = ids.policy
const inRange: number | null = ids.tryAllocateInRange(10, 20)
const block: number = ids.allocateBlock(4, 4)
ids.freeBlock(block, 4)
const many: number[] = ids.allocateMany(3)
ids.freeMany(many)
ids.freeMany(new Float64Array(0))
const cyclic = new ConcurrentBitmap(mem, 100, { policy: 'cyclic', reclaimWhenFull: false })
const tracked: boolean = mem.tracksHolders
const reclaimed: number = ids.reclaim()
const holder: Holder | null = ids.holderOf(0)
const pid: number | undefined = holder?.pid
const untracked = loadShared('typed-untracked', 8, { holders: false })
const lease: Lease = ids.acquire()
const leased: number = lease.value
lease.release()
function scoped(pool: ConcurrentBitmap): number {
  using port = pool.acquire()
  return port.value
}
ids.close({ release: true })
const onExit = ConcurrentBitmap.open('typed-exit', { capacity: 8, releaseOnExit: true })
class Slots extends ConcurrentBitmap {
  take(): number {
    return this.allocate()
  }
}
const slot: number = Slots.open('typed-slots', { capacity: 8 }).take()
const maybe = ids.tryAllocate()
if (maybe !== null) {
  const id: number = maybe
  ids.free(id)
}
const used: number = ids.count()
const held: boolean = ids.isAllocated(0)
ids.close()
mem.close()
const existed: boolean = destroyShared('typed-consumer')
const code: NumballocErrorCode = 'ERR_NO_FREE_NUMBER'

export { size, name, slot, blocks, max, used, held, existed, code, MAX_SIZE, policy, inRange, cyclic }
export { tracked, reclaimed, pid, untracked, leased, scoped, onExit }

async function ports(): Promise<number> {
  const pool: PortPool = await PortPool.open('typed-ports', { from: 9000, to: 9099, host: '127.0.0.1' })
  const options: GetPortOptions = { port: portNumbers(9000, 9010), exclude: [9001], host: '::1' }
  const port: number = await pool.getPort(options)
  pool.release(port)
  {
    using lease = await pool.acquire({ port: 9005 })
    const leasedPort: number = lease.value
    void leasedPort
  }
  const holderPid: number | undefined = pool.holderOf(9000)?.pid
  void holderPid
  const range: [number, number, string | undefined] = [pool.from, pool.to, pool.host]
  void range
  pool.close({ release: true })
  const any: number = await getPort()
  releasePort(any)
  return getPort({ port: 3000 })
}
const report: RegionReport = inspectShared('typed-consumer', { cells: 16 })
const dead: number = report.heldByDead + report.holders.filter((h) => !h.alive).length
const tag: bigint = loadShared('typed-consumer').tag + report.tag
const names: string[] = listShared({ directory: '/tmp' })
const cameBack: number = reclaimShared('ports', { directory: '/tmp' })
const created: number = loadShared('ports').capacity
const tagged = loadShared('typed-tagged', 8, { tag: 0x50n })

export { ports, dead, tag, names, tagged }

const syncPort: number = getPortSync({ port: [3000, 3001], exclude: [3002] })

const queue = ConcurrentQueue.open('typed-queue', { capacity: 16, releaseOnExit: true, holders: true })
const fifo: Allocator = queue
const next: number = fifo.allocate()
const waiting: number[] = queue.waiting(10)
const queued: number | null = queue.tryAllocate()
using queueSlot = queue.acquire()
const kind: 'bitmap' | 'queue' = mem.kind
const largest: number = MAX_QUEUE_CAPACITY
class Slots2 extends ConcurrentQueue {}
const slots2: Slots2 = Slots2.open('typed-queue-2', { capacity: 4 })
const overQueue = new ConcurrentQueue(loadShared('typed-queue'), { reclaimWhenFull: false })
queue.close({ release: true })

// The Redis backend, and code written once for every allocator.
async function withNumber(ids: AsyncAllocator, work: (n: number) => Promise<void>): Promise<void> {
  const n = await ids.allocate()
  try {
    await work(n)
  } finally {
    await ids.free(n)
  }
}
async function remote(): Promise<number> {
  const ids = await RedisAllocator.open('typed-redis', { redis: 'redis://127.0.0.1:6379', capacity: 1024, policy: 'lowest', leaseMs: 5000, replicas: 1 })
  await withNumber(ids, async () => {})
  await withNumber(ConcurrentBitmap.open('typed-local', { capacity: 8 }), async () => {})
  ids.on('lost', (error) => console.log(error.code))
  // The rest of EventEmitter's methods, as node:events has them.
  const onLost: LostListener = (error) => console.log(error.message)
  const listeners: number = ids.addListener('lost', onLost).prependListener('lost', onLost).listenerCount('lost')
  ids.removeListener('lost', onLost).removeAllListeners('lost').removeAllListeners().setMaxListeners(listeners + 20)
  const names: Array<string | symbol> = ids.eventNames()
  console.log(names, ids.getMaxListeners(), ids.listeners('lost').length)
  await using lease = await ids.acquire()
  const token: number = lease.token
  const aborted: boolean = lease.signal.aborted
  const holder: RedisHolder | null = await ids.holderOf(lease.value)
  const many: number[] = await ids.allocateMany(4)
  await ids.freeMany(many)
  const block: number | null = await ids.tryAllocateBlock(8, 8)
  const inRange: number = await ids.allocateInRange(10, 20)
  const back: number = await ids.reclaim()
  const capacity: number = MAX_REDIS_CAPACITY + ids.max
  const held: RemoteLease = lease
  void [token, aborted, holder, block, inRange, back, capacity, held]
  await ids.close({ release: true })
  return ids.count()
}
void remote
