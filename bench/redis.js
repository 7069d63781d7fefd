'use strict'
// RedisAllocator against what people write today on the same server (bench/redis-worker.js),
// and against the shared-memory allocator, so users see what leaving the machine costs. Every
// figure is a median of interleaved rounds on one redis-server this file starts (a Unix socket,
// and TCP on 127.0.0.1 for the loopback rows); ratios are to a baseline measured in the same run.
const { fork } = require('node:child_process')
const path = require('node:path')
const { ConcurrentBitmap, destroyShared } = require('..')
const { startRedis } = require('../__test__/redis-server.js')

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

/** Runs `clients` worker processes of `approach` at once for `ms`; resolves with their reports. */
async function run(url, approach, name, clients, ms, hold, callers = 1, capacity = 1024) {
  const children = Array.from({ length: clients }, () =>
    fork(path.join(__dirname, 'redis-worker.js'), [approach, url, name, capacity, ms, hold, callers], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }),
  )
  const next = (child) =>
    new Promise((resolve, reject) => {
      child.once('message', resolve)
      child.once('exit', (code) => code !== 0 && reject(new Error(`${approach} worker exited ${code}`)))
    })
  await Promise.all(children.map(next))
  const reports = children.map(next)
  for (const child of children) child.send('go')
  return Promise.all(reports)
}

/** ns per pair of the shared-memory bitmap in this process (1,024 numbers, 8 held). */
function sharedMemoryPair(count) {
  const name = `numballoc-bench-redis-shm-${process.pid}`
  const ids = ConcurrentBitmap.open(name, { capacity: 1024 })
  for (let i = 0; i < 8; i++) ids.allocate()
  for (let i = 0; i < count; i++) ids.free(ids.allocate())
  const start = process.hrtime.bigint()
  for (let i = 0; i < count; i++) ids.free(ids.allocate())
  const ns = Number(process.hrtime.bigint() - start) / count
  ids.close()
  destroyShared(name)
  return ns
}

async function redisBench({ quick, rounds, print }) {
  const server = await startRedis(null, { tcp: true })
  try {
    const ms = quick ? 300 : 1500
    const one = { ping: [], 'ping-own': [], numballoc: [], 'numballoc-ioredis': [], many: [], watch: [], setnx: [] }
    const four = { numballoc: [], 'numballoc-ioredis': [], watch: [], setnx: [] }
    const busy = { numballoc: [], 'numballoc-ioredis': [], watch: [], setnx: [] }
    // The same over TCP loopback: one client, and four.
    const tcpOne = { ping: [], numballoc: [], watch: [] }
    const tcpFour = { numballoc: [], watch: [] }
    const shm = []
    for (let r = 0; r < rounds; r++) {
      for (const approach of Object.keys(one)) {
        const [report] = await run(server.url, approach, `one-${approach}-${r}`, 1, ms, 8)
        one[approach].push(report.ns)
      }
      for (const approach of Object.keys(four)) {
        const reports = await run(server.url, approach, `four-${approach}-${r}`, 4, ms, 8)
        four[approach].push(reports.reduce((sum, report) => sum + report.numbers / report.seconds, 0))
      }
      for (const approach of Object.keys(busy)) {
        const reports = await run(server.url, approach, `busy-${approach}-${r}`, 4, ms, 2, 8)
        busy[approach].push(reports.reduce((sum, report) => sum + report.numbers / report.seconds, 0))
      }
      for (const approach of Object.keys(tcpOne)) {
        const [report] = await run(server.tcpUrl, approach, `tcp-one-${approach}-${r}`, 1, ms, 8)
        tcpOne[approach].push(report.ns)
      }
      for (const approach of Object.keys(tcpFour)) {
        const reports = await run(server.tcpUrl, approach, `tcp-four-${approach}-${r}`, 4, ms, 8)
        tcpFour[approach].push(reports.reduce((sum, report) => sum + report.numbers / report.seconds, 0))
      }
      shm.push(sharedMemoryPair(quick ? 1e5 : 1e6))
    }
    const floor = median(one.ping)
    const ownFloor = median(one['ping-own'])
    print('RedisAllocator, one client: allocate + free (ratio to two PINGs over ioredis, the round trips a pair needs)', [
      ['two PINGs over ioredis (the floor)', floor, 1],
      ["two PINGs over numballoc's own connection", ownFloor, ownFloor / floor],
      ['numballoc RedisAllocator, its own connection (URL)', median(one.numballoc), median(one.numballoc) / floor],
      ['numballoc RedisAllocator over ioredis', median(one['numballoc-ioredis']), median(one['numballoc-ioredis']) / floor],
      ['numballoc allocateMany(64) + freeMany(), per number', median(one.many), median(one.many) / floor],
      ['WATCH/MULTI over the whole bitmap, over ioredis', median(one.watch), median(one.watch) / floor],
      ['SET NX per number from a random point, over ioredis', median(one.setnx), median(one.setnx) / floor],
      ['ConcurrentBitmap (shared memory, one machine) allocate() + free()', median(shm), median(shm) / floor],
    ])
    const watch = median(four.watch)
    print(
      'RedisAllocator, 4 client processes at once on 1,024 numbers, each holding up to 8: numbers per second (ratio to WATCH/MULTI)',
      [
        ['WATCH/MULTI over the whole bitmap, over ioredis', watch, 1],
        ['SET NX per number from a random point, over ioredis', median(four.setnx), median(four.setnx) / watch],
        ['numballoc RedisAllocator over ioredis', median(four['numballoc-ioredis']), median(four['numballoc-ioredis']) / watch],
        ['numballoc RedisAllocator, its own connections (URL)', median(four.numballoc), median(four.numballoc) / watch],
      ],
      'per second',
    )
    const tcpFloor = median(tcpOne.ping)
    print('RedisAllocator over TCP loopback (127.0.0.1), one client: allocate + free (ratio to two PINGs over ioredis)', [
      ['two PINGs over ioredis (the floor)', tcpFloor, 1],
      ['numballoc RedisAllocator, its own connection (URL)', median(tcpOne.numballoc), median(tcpOne.numballoc) / tcpFloor],
      ['WATCH/MULTI over the whole bitmap, over ioredis', median(tcpOne.watch), median(tcpOne.watch) / tcpFloor],
    ])
    const tcpWatch = median(tcpFour.watch)
    print(
      'RedisAllocator over TCP loopback, 4 client processes at once, each holding up to 8: numbers per second (ratio to WATCH/MULTI)',
      [
        ['WATCH/MULTI over the whole bitmap, over ioredis', tcpWatch, 1],
        ['numballoc RedisAllocator, its own connections (URL)', median(tcpFour.numballoc), median(tcpFour.numballoc) / tcpWatch],
      ],
      'per second',
    )
    const busyWatch = median(busy.watch)
    print(
      'RedisAllocator, 4 client processes with 8 callers each (32 numbers wanted at once), each caller holding up to 2: numbers per second (ratio to WATCH/MULTI)',
      [
        ['WATCH/MULTI over the whole bitmap, a connection per caller, over ioredis', busyWatch, 1],
        ['SET NX per number from a random point, one connection per process, over ioredis', median(busy.setnx), median(busy.setnx) / busyWatch],
        ['numballoc RedisAllocator, one per process, over ioredis', median(busy['numballoc-ioredis']), median(busy['numballoc-ioredis']) / busyWatch],
        ['numballoc RedisAllocator, one per process, its own connection (URL)', median(busy.numballoc), median(busy.numballoc) / busyWatch],
      ],
      'per second',
    )
  } finally {
    await server.cleanup()
  }
}

module.exports = { redisBench }
