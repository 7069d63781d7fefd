'use strict'
// The worker side of bench/index.js. Modes:
//   churn NAME CAPACITY MS [POLICY]  allocate+free pairs on a shared region until MS after 'go'
//                            (POLICY 'queue': on a ConcurrentQueue; 'floor-one'/'floor-two',
//                            threads only: a region of its own plus shared Atomics.add);
//                            reports pairs (in a child process or a worker thread)
//   pair NAME CAPACITY N KIND  N allocate+free pairs on a fresh bitmap or queue, half held
//                            (KIND 'bare': a bitmap without holder records)
//   numballoc NAME CAPACITY N  N unique numbers from the region (allocate, then free)
//   ipc N                      N numbers requested from the cluster primary over IPC (and given back)
//   ourport N                  N ports from numballoc's getPort() (each released again)
//   getport N                  N ports from get-port
const { ConcurrentBitmap, ConcurrentQueue, destroyShared } = require('..')

const args = process.env.BENCH_ARGS ? JSON.parse(process.env.BENCH_ARGS) : process.argv.slice(2)
const [mode] = args

async function perNumber() {
  if (mode === 'pair') {
    // pair NAME CAPACITY N KIND: a pair's time on a fresh allocator with half its numbers held.
    const [, name, capacity, count, kind] = args
    const options = { capacity: Number(capacity), holders: kind !== 'bare' }
    const allocator = kind === 'queue' ? ConcurrentQueue.open(name, options) : ConcurrentBitmap.open(name, options)
    for (let i = 0; i < Number(capacity) / 2; i++) allocator.allocate()
    for (let i = 0; i < Number(count); i++) allocator.free(allocator.allocate()) // JIT warm-up
    const start = process.hrtime.bigint()
    for (let i = 0; i < Number(count); i++) allocator.free(allocator.allocate())
    const ns = Number(process.hrtime.bigint() - start) / Number(count)
    allocator.close()
    return ns
  }
  if (mode === 'numballoc') {
    const [, name, capacity, count] = args
    const bitmap = ConcurrentBitmap.open(name, { capacity: Number(capacity) })
    for (let i = 0; i < Number(count); i++) bitmap.free(bitmap.allocate()) // JIT warm-up
    const start = process.hrtime.bigint()
    for (let i = 0; i < Number(count); i++) bitmap.free(bitmap.allocate())
    return Number(process.hrtime.bigint() - start) / Number(count)
  }
  if (mode === 'ipc') {
    const count = Number(args[1])
    let pending
    process.on('message', (m) => m.number !== undefined && pending(m.number))
    const request = () => new Promise((resolve) => ((pending = resolve), process.send({ want: true })))
    const start = process.hrtime.bigint()
    for (let i = 0; i < count; i++) {
      const n = await request()
      process.send({ giveBack: n })
    }
    return Number(process.hrtime.bigint() - start) / count
  }
  if (mode === 'ourport') {
    // numballoc's getPort(): a port from the pool that a listen check found free, then given back.
    const count = Number(args[1])
    const { getPort, releasePort } = require('..')
    const start = process.hrtime.bigint()
    for (let i = 0; i < count; i++) releasePort(await getPort())
    return Number(process.hrtime.bigint() - start) / count
  }
  if (mode === 'getport') {
    const count = Number(args[1])
    const { default: getPort } = await import('get-port')
    const start = process.hrtime.bigint()
    for (let i = 0; i < count; i++) await getPort()
    return Number(process.hrtime.bigint() - start) / count
  }
  throw new Error(`unknown mode ${mode}`)
}

if (mode === 'churn') {
  // As a child process (process.send) or a worker thread (parentPort): the same loop.
  const { parentPort, workerData, threadId } = require('node:worker_threads')
  const send = parentPort ? (m, done) => (parentPort.postMessage(m), done?.()) : (m, done) => process.send(m, done)
  const on = parentPort ? (f) => parentPort.on('message', f) : (f) => process.on('message', f)
  const [, name, capacity, ms, policy = 'any'] = args
  // 'queue' churns on a ConcurrentQueue; 'floor-one' and 'floor-two' (threads only) on a bitmap of
  // their own, adding one or two Atomics.add on words shared with the other thread (the floor of
  // a 2-vs-1 figure for calls that must write a shared word); the others are a bitmap's policies.
  const floor = policy.startsWith('floor-')
  const own = floor ? `${name}-${threadId}` : name
  const options = { capacity: Number(capacity), policy: floor ? 'any' : policy }
  const allocator = policy === 'queue' ? ConcurrentQueue.open(name, options) : ConcurrentBitmap.open(own, options)
  const shared = floor ? new BigInt64Array(workerData.shared) : null
  const batch =
    {
      // 16 words apart: 128 bytes, another pair of cache lines.
      'floor-one': () => {
        for (let i = 0; i < 10000; i++) {
          const n = allocator.allocate()
          Atomics.add(shared, 0, 1n)
          allocator.free(n)
        }
      },
      'floor-two': () => {
        for (let i = 0; i < 10000; i++) {
          const n = allocator.allocate()
          Atomics.add(shared, 0, 1n)
          allocator.free(n)
          Atomics.add(shared, 16, 1n)
        }
      },
    }[policy] ??
    (() => {
      for (let i = 0; i < 10000; i++) allocator.free(allocator.allocate())
    })
  on((m) => {
    if (m !== 'go') return
    const end = Date.now() + Number(ms)
    let pairs = 0
    while (Date.now() < end) {
      batch()
      pairs += 10000
    }
    allocator.close()
    if (floor) destroyShared(own)
    send({ pairs }, () => (parentPort ? parentPort.close() : process.disconnect()))
  })
  send('ready')
} else {
  perNumber().then((ns) => process.send({ ns }, () => process.disconnect()))
}
