'use strict'
// The client side of bench/redis.js, one process standing in for one machine:
//   APPROACH URL NAME CAPACITY MS HOLD CALLERS
// runs CALLERS loops at once (as a service whose requests each want a number), each taking
// numbers for MS milliseconds after 'go' and holding at most HOLD at a time (the oldest is freed
// first); reports { numbers, ns, seconds } (numbers taken; mean ns per allocate + free of one
// loop). Calls of one process share one connection, except WATCH/MULTI, whose transactions
// need a connection each.
// APPROACH: 'numballoc' (RedisAllocator over its own connection), 'numballoc-ioredis' (over an
// ioredis client), 'many' (allocateMany(64) + freeMany), 'watch' (optimistic WATCH/MULTI over
// the whole bitmap, as a snapshot-and-compare-and-swap allocator does), 'setnx' (a SET NX key per
// number, tried from a random point), 'ping' (two PINGs over ioredis: the round trips a pair
// needs at least), 'ping-own' (the same over numballoc's own connection).
const path = require('node:path')
const { RedisAllocator } = require('..')
const Redis = require('ioredis')

const [approach, url, name, capacityText, msText, holdText, callersText = '1'] = process.argv.slice(2)
const capacity = Number(capacityText)
const ms = Number(msText)
const hold = Number(holdText)
const callers = Number(callersText)
const socket = url.startsWith('unix://') ? { path: url.slice('unix://'.length) } : url

/** What one process shares between its loops: an allocator, or a connection. */
async function shared() {
  if (approach === 'numballoc' || approach === 'numballoc-ioredis' || approach === 'many') {
    const client = approach === 'numballoc-ioredis' ? new Redis(socket) : null
    const ids = await RedisAllocator.open(name, { redis: client ?? url, capacity, leaseMs: 30_000 })
    return {
      ids,
      close: async () => {
        await ids.close({ release: true })
        client?.disconnect()
      },
    }
  }
  const redis = new Redis(socket)
  return { redis, close: async () => redis.disconnect() }
}

/** One loop's `take()` (resolves with how many numbers it took) and `close()`. */
async function pairs({ ids, redis: sharedRedis }) {
  const close = async () => {}
  if (ids) {
    if (approach === 'many') {
      return {
        take: async () => {
          await ids.freeMany(await ids.allocateMany(64))
          return 64
        },
        close,
      }
    }
    const held = []
    return {
      take: async () => {
        held.push(await ids.allocate())
        if (held.length > hold) await ids.free(held.shift())
        return 1
      },
      close,
    }
  }
  let redis = sharedRedis
  if (approach === 'ping-own') {
    // The same two round trips over the connection numballoc makes for a URL.
    const { RespClient } = require('../lib/resp.js')
    const client = new RespClient(url, 5000)
    return {
      take: async () => {
        await client.call(['PING'])
        await client.call(['PING'])
        return 1
      },
      close: async () => client.close(),
    }
  }
  if (approach === 'ping') {
    return {
      take: async () => {
        await redis.ping()
        await redis.ping()
        return 1
      },
      close,
    }
  }
  const held = []
  if (approach === 'watch') {
    const key = `bench-watch:{${name}}`
    redis = new Redis(socket)
    return {
      take: async () => {
        for (;;) {
          await redis.watch(key)
          const bits = (await redis.getBuffer(key)) ?? Buffer.alloc(0)
          let n = -1
          for (let i = 0; i < capacity && n < 0; i++) {
            const byte = i >> 3
            if (byte >= bits.length || (bits[byte] & (0x80 >> (i & 7))) === 0) n = i
          }
          if (n < 0) {
            await redis.unwatch()
            throw new Error('full')
          }
          const done = await redis.multi().setbit(key, n, 1).exec()
          if (done === null) continue // someone else wrote the bitmap meanwhile: start again
          held.push(n)
          if (held.length > hold) await redis.setbit(key, held.shift(), 0)
          return 1
        }
      },
      close: async () => redis.disconnect(),
    }
  }
  if (approach === 'setnx') {
    return {
      take: async () => {
        const start = Math.floor(Math.random() * capacity)
        for (let i = 0; i < capacity; i++) {
          const n = (start + i) % capacity
          if ((await redis.set(`bench-setnx:{${name}}:${n}`, String(process.pid), 'PX', 30_000, 'NX')) === 'OK') {
            held.push(n)
            if (held.length > hold) await redis.del(`bench-setnx:{${name}}:${held.shift()}`)
            return 1
          }
        }
        throw new Error('full')
      },
      close,
    }
  }
  throw new Error(`no approach ${approach}`)
}

;(async () => {
  const common = await shared()
  const loops = await Promise.all(Array.from({ length: callers }, () => pairs(common)))
  for (const { take } of loops) for (let i = 0; i < 100; i++) await take() // warm up
  process.send('ready')
  await new Promise((resolve) => process.once('message', resolve))
  const start = process.hrtime.bigint()
  const end = start + BigInt(ms) * 1_000_000n
  const counts = await Promise.all(
    loops.map(async ({ take }) => {
      let numbers = 0
      while (process.hrtime.bigint() < end) numbers += await take()
      return numbers
    }),
  )
  const elapsed = Number(process.hrtime.bigint() - start)
  const numbers = counts.reduce((a, b) => a + b, 0)
  for (const { close } of loops) await close()
  await common.close()
  process.send({ numbers, ns: (elapsed * callers) / numbers, seconds: elapsed / 1e9 })
})().catch((error) => {
  console.error(path.basename(__filename), approach, error)
  process.exit(1)
})
