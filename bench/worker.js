'use strict'
// The worker side of bench/index.js. Modes:
//   churn NAME CAPACITY MS [POLICY]  allocate+free pairs on a shared region until MS after 'go'
//                            (POLICY 'queue': on a ConcurrentQueue);
//                            reports pairs (in a child process or a worker thread)
//   pair NAME CAPACITY N KIND  N allocate+free pairs on a fresh bitmap or queue, half held
//                            (KIND 'bare': a bitmap without holder records)
//   numballoc NAME CAPACITY N  N unique numbers from the region (allocate, then free)
//   ipc N                      N numbers requested from the cluster primary over IPC (and given back)
//   ourport N                  N ports from numballoc's getPort() (each released again)
//   getport N                  N ports from get-port
const { ConcurrentBitmap, ConcurrentQueue } = require('..')

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
  const { parentPort } = require('node:worker_threads')
  const send = parentPort ? (m, done) => (parentPort.postMessage(m), done?.()) : (m, done) => process.send(m, done)
  const on = parentPort ? (f) => parentPort.on('message', f) : (f) => process.on('message', f)
  const [, name, capacity, ms, policy = 'any'] = args
  // 'queue' churns on a ConcurrentQueue; the others are a bitmap's policies.
  const bitmap =
    policy === 'queue' ? ConcurrentQueue.open(name, { capacity: Number(capacity) }) : ConcurrentBitmap.open(name, { capacity: Number(capacity), policy })
  on((m) => {
    if (m !== 'go') return
    const end = Date.now() + Number(ms)
    let pairs = 0
    while (Date.now() < end) {
      for (let i = 0; i < 10000; i++) bitmap.free(bitmap.allocate())
      pairs += 10000
    }
    bitmap.close()
    send({ pairs }, () => (parentPort ? parentPort.close() : process.disconnect()))
  })
  send('ready')
} else {
  perNumber().then((ns) => process.send({ ns }, () => process.disconnect()))
}
