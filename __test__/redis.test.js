'use strict'
// What RedisAllocator promises beyond the conformance suite (which it passes too): every client
// library and URL, the policies, batches and blocks all or nothing, fencing tokens, leases that
// end (SIGKILL, SIGSTOP, a stalled event loop), a server that stops, dies or restarts, and
// hostile input. Against a real redis-server this file starts (redis-server.js).
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn } = require('node:child_process')
const { RedisAllocator, MAX_REDIS_CAPACITY, listRedis, inspectRedis } = require('..')
const { RespClient } = require('../lib/resp.js')
const { startRedis, slowProxy } = require('./redis-server.js')
const { forkFixture, waitFor, kill9 } = require('./helpers.js')

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
let sequence = 0
const unique = (tag) => `${tag}-${process.pid}-${sequence++}`

let server
test.before(async () => {
  server = await startRedis(null, { tcp: true })
})
test.after(() => server?.cleanup())

/** Opens `name` on the file's server and closes it (releasing) when the test ends. */
async function open(t, name, options = {}) {
  const ids = await RedisAllocator.open(name, { redis: server.url, capacity: 8, ...options })
  t.after(() => ids.close({ release: true }).catch(() => {}))
  return ids
}

/**
 * The app's own ioredis client on the file's server, as RedisAllocator sees it, with every reply
 * passed through `reply(value, args)` first (which may hold it back, or stall): a slow network
 * or a busy event loop, on demand.
 */
function ioredisThrough(t, reply) {
  const Redis = require('ioredis')
  const real = new Redis({ path: path.join(server.dir, 'redis.sock') })
  t.after(() => real.disconnect())
  return { status: 'ready', call: (command, ...args) => real.call(command, ...args).then((value) => reply(value, args)) }
}

/** Runs the `numballoc` command: its exit status, stdout and stderr. */
function cli(...args) {
  const { spawnSync } = require('node:child_process')
  const result = spawnSync(process.execPath, [path.join(__dirname, '..', 'bin', 'numballoc.js'), ...args], { encoding: 'utf8' })
  return { status: result.status, out: result.stdout, err: result.stderr }
}

/** A raw connection to `where` for what the tests do behind the allocator's back. */
function raw(t, url = server.url) {
  const client = new RespClient(url, 5000)
  t.after(() => client.close())
  return client
}

test('one allocator through a Unix socket URL, a TCP URL, ioredis and node-redis: each number to one handle', async (t) => {
  const Redis = require('ioredis')
  const { createClient } = require('redis')
  const ioredis = new Redis({ path: path.join(server.dir, 'redis.sock'), lazyConnect: false })
  t.after(() => ioredis.disconnect())
  const nodeRedis = createClient({ url: server.tcpUrl })
  await nodeRedis.connect()
  t.after(() => nodeRedis.destroy?.() ?? nodeRedis.disconnect())
  const name = unique('clients')
  const handles = [
    await open(t, name, { redis: server.url }),
    await open(t, name, { redis: server.tcpUrl }),
    await open(t, name, { redis: ioredis }),
    await open(t, name, { redis: nodeRedis }),
  ]
  const got = []
  for (const ids of handles) got.push(await ids.allocate(), await ids.allocate())
  assert.deepEqual(
    [...got].sort((a, b) => a - b),
    [0, 1, 2, 3, 4, 5, 6, 7],
  )
  for (const ids of handles) assert.equal(await ids.tryAllocate(), null)
  const holder = await handles[2].holderOf(got[7])
  assert.equal(holder.pid, process.pid)
  assert.equal(holder.host, os.hostname())
  assert.ok(holder.expiresAt > Date.now() && holder.expiresAt <= Date.now() + 10_000, `${holder.expiresAt}`)
  // A number held by another handle is not this one's to free.
  await assert.rejects(handles[0].free(got[7]), { code: 'ERR_NOT_ALLOCATED' })
  assert.equal(await handles[0].isAllocated(got[7]), true)
  await handles[3].free(got[7])
  assert.equal(await handles[0].allocate(), got[7])
  // The user's clients stay open after close; the allocator's own connection does not.
  await handles[2].close({ release: true })
  await handles[3].close({ release: true })
  assert.equal(await ioredis.ping(), 'PONG')
  assert.equal(await nodeRedis.ping(), 'PONG')
  assert.equal(await handles[0].count(), 5)
})

test("policies: 'lowest' from 0, 'cyclic' after the last handed out by anyone, 'any' in range; a second open with another policy or capacity is refused", async (t) => {
  const lowest = await open(t, unique('lowest'), { policy: 'lowest' })
  assert.deepEqual([await lowest.allocate(), await lowest.allocate(), await lowest.allocate()], [0, 1, 2])
  await lowest.free(1)
  assert.equal(await lowest.allocate(), 1)

  const name = unique('cyclic')
  const a = await open(t, name, { policy: 'cyclic' })
  const b = await open(t, name, { policy: 'cyclic' })
  assert.equal(await a.allocate(), 0)
  assert.equal(await b.allocate(), 1)
  await a.free(0)
  assert.equal(await a.allocate(), 2, 'after the last one handed out, not the one just freed')
  for (let n = 3; n < 8; n++) assert.equal(await (n % 2 ? a : b).allocate(), n)
  assert.equal(await b.allocate(), 0, 'wraps')

  const any = await open(t, unique('any'), { capacity: 1000 })
  const seen = new Set()
  for (let i = 0; i < 20; i++) seen.add(await any.allocate())
  assert.equal(seen.size, 20)
  assert.ok(Math.max(...seen) > 100, `spread over the range: ${[...seen]}`)

  await assert.rejects(RedisAllocator.open(name, { redis: server.url, capacity: 8, policy: 'lowest' }), { code: 'ERR_POLICY_MISMATCH' })
  await assert.rejects(RedisAllocator.open(name, { redis: server.url, capacity: 9, policy: 'cyclic' }), { code: 'ERR_SIZE_MISMATCH' })
})

test('ranges, blocks and batches: all or nothing', async (t) => {
  const ids = await open(t, unique('batches'), { capacity: 64, policy: 'lowest' })
  assert.equal(await ids.allocateInRange(10, 11), 10)
  assert.equal(await ids.allocateInRange(10, 11), 11)
  assert.equal(await ids.tryAllocateInRange(10, 11), null)
  await assert.rejects(ids.allocateInRange(10, 11), { code: 'ERR_NO_FREE_NUMBER' })
  await assert.rejects(ids.allocateInRange(11, 10), { code: 'ERR_OUT_OF_RANGE' })

  assert.equal(await ids.allocateBlock(8, 8), 0)
  assert.equal(await ids.allocateBlock(4, 4), 12, '8..11 is not free (10, 11 held)')
  assert.equal(await ids.allocateBlock(3), 16, '8..9 is too short')
  assert.equal(await ids.allocateBlock(2), 8)
  assert.equal(await ids.tryAllocateBlock(64), null)
  assert.equal(await ids.count(), 2 + 8 + 4 + 3 + 2)
  await ids.freeBlock(0, 8)
  assert.equal(await ids.count(), 2 + 4 + 3 + 2)
  await assert.rejects(ids.freeBlock(0, 8), { code: 'ERR_NOT_ALLOCATED' })

  const many = await ids.allocateMany(20)
  assert.equal(new Set(many).size, 20)
  for (const n of many) assert.equal(await ids.isAllocated(n), true)
  const before = await ids.count()
  await assert.rejects(ids.allocateMany(64 - before + 1), { code: 'ERR_NO_FREE_NUMBER' })
  assert.equal(await ids.count(), before, 'a batch that does not fit takes nothing')

  const other = await open(t, ids.name, { capacity: 64, policy: 'lowest' })
  const theirs = await other.allocate()
  await assert.rejects(ids.freeMany([many[0], theirs]), { code: 'ERR_NOT_ALLOCATED', message: new RegExp(`^${theirs} `) })
  await assert.rejects(ids.freeMany([many[0], many[0]]), { code: 'ERR_NOT_ALLOCATED' })
  assert.equal(await ids.isAllocated(many[0]), true, 'a batch free that fails frees nothing')
  await ids.freeMany(many)
  assert.equal(await ids.count(), before - 20 + 1)
})

test('fencing tokens only grow: across handles, processes, batches and lost leases', async (t) => {
  const name = unique('tokens')
  const a = await open(t, name, { capacity: 100 })
  const b = await open(t, name, { capacity: 100 })
  const tokens = []
  for (let i = 0; i < 10; i++) {
    const lease = await (i % 2 ? a : b).acquire()
    tokens.push(lease.token)
    const holder = await a.holderOf(lease.value)
    assert.equal(holder.token, lease.token)
    if (i % 3 === 0) await lease.release()
  }
  for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i] > tokens[i - 1], `${tokens}`)
  const child = forkFixture('redis-holder.js', [server.url, name, 100, 5000, path.join(os.tmpdir(), `${unique('log')}`)])
  const { token } = await waitFor(child, (m) => m.token !== undefined)
  await kill9(child)
  assert.ok(token > tokens.at(-1))
  assert.ok((await a.acquire()).token > token)
})

test('a holder killed with SIGKILL: its numbers come back when its lease ends, not before', async (t) => {
  const name = unique('killed')
  const leaseMs = 1500
  const own = await open(t, name, { capacity: 4 })
  const log = path.join(os.tmpdir(), unique('killed-log'))
  t.after(() => fs.rmSync(log, { force: true }))
  const child = forkFixture('redis-holder.js', [server.url, name, 4, leaseMs, log])
  const { value } = await waitFor(child, (m) => m.value !== undefined)
  await sleep(leaseMs) // it renews meanwhile
  const killedAt = Date.now()
  await kill9(child)
  const { expiresAt } = await own.holderOf(value)
  assert.ok(expiresAt > killedAt + leaseMs / 3, `renewed: ends ${expiresAt - killedAt} ms after the kill`)
  let back = false
  while (!back) {
    const asked = Date.now()
    const reclaimed = await own.reclaim()
    if (reclaimed > 0) {
      assert.equal(reclaimed, 1)
      assert.ok(Date.now() >= expiresAt, `given back ${expiresAt - Date.now()} ms before the lease ended`)
      back = true
    } else {
      assert.ok(asked < expiresAt + 1000, 'still held a second after the lease ended')
      assert.equal(await own.isAllocated(value), true)
      await sleep(50)
    }
  }
  assert.equal(await own.isAllocated(value), false)
})

test("SIGSTOP past its lease: the holder's signal says lost before another process is handed its number", async (t) => {
  const name = unique('stopped')
  const leaseMs = 500
  const log = path.join(os.tmpdir(), unique('stopped-log'))
  t.after(() => fs.rmSync(log, { force: true }))
  const child = forkFixture('redis-holder.js', [server.url, name, 1, leaseMs, log])
  t.after(() => kill9(child))
  const { value } = await waitFor(child, (m) => m.value !== undefined)
  assert.equal(value, 0)
  await sleep(leaseMs) // holding and renewing
  child.kill('SIGSTOP')
  await sleep(2 * leaseMs)
  const other = await open(t, name, { capacity: 1 })
  const askedAt = Date.now()
  assert.equal(await other.allocate(), 0, "the stopped holder's number, once its lease ended")
  child.kill('SIGCONT')
  const reply = waitFor(child, (m) => m.released !== undefined)
  await sleep(200)
  child.send('release')
  const { tryAgain } = await reply
  assert.equal(tryAgain, null, "its release gave back nothing: the number is the other holder's")
  assert.equal(await other.isAllocated(0), true)
  const lines = fs.readFileSync(log, 'utf8').trim().split('\n')
  const held = lines.filter((line) => line.startsWith('held ')).map((line) => Number(line.split(' ')[2]))
  assert.ok(held.length > 10, `it reported holding: ${lines.slice(0, 3)}`)
  assert.ok(Math.max(...held) < askedAt, `it counted on the number ${Math.max(...held) - askedAt} ms after another process asked for it`)
  assert.ok(
    lines.some((line) => line.startsWith('abort ')),
    'its signal aborted',
  )
  assert.ok(
    lines.some((line) => line.startsWith('lost ')),
    "'lost' was emitted",
  )
})

test("a lease the server ended: 'lost' is emitted, the signal aborts, the next call takes a new lease", async (t) => {
  const ids = await open(t, unique('ended'), { capacity: 4, leaseMs: 60_000 })
  const lease = await ids.acquire()
  const lost = new Promise((resolve) => ids.once('lost', resolve))
  const { owner } = await ids.holderOf(lease.value)
  // The server's view: this owner's lease ended (as a stall on its side, or a clock step, would make it).
  await raw(t).call(['ZADD', `numballoc:{${ids.name}}:leases`, '0', owner])
  const next = await ids.allocate()
  assert.equal((await lost).code, 'ERR_LEASE_LOST')
  assert.equal(lease.signal.aborted, true)
  assert.equal(lease.signal.reason.code, 'ERR_LEASE_LOST')
  assert.equal(await ids.isAllocated(lease.value), next === lease.value, 'the lost number was given back')
  assert.notEqual((await ids.holderOf(next)).owner, owner, 'held under a new lease')
  await lease.release() // nothing to give back, and no error
  assert.equal(await ids.count(), 1)
})

test('a stalled event loop: the lease is lost locally before the server ends it, and the next call takes a new lease', async (t) => {
  const ids = await open(t, unique('stall'), { capacity: 4, leaseMs: 200 })
  const lease = await ids.acquire()
  const { owner } = await ids.holderOf(lease.value)
  const until = Date.now() + 400
  while (Date.now() < until); // no heartbeat can run
  assert.equal(lease.signal.aborted, true, 'reading the signal checks the clock')
  assert.throws(() => lease.signal.throwIfAborted(), { code: 'ERR_LEASE_LOST' })
  const n = await ids.allocate()
  assert.equal(await ids.isAllocated(n), true)
  assert.notEqual((await ids.holderOf(n)).owner, owner, 'held under a new lease')
})

test('Redis unreachable, stopped or killed: every call fails with a coded error within its timeout, and works again after', async (t) => {
  const missing = path.join(os.tmpdir(), unique('no-redis'), 'redis.sock')
  let started = Date.now()
  await assert.rejects(RedisAllocator.open('x', { redis: `unix://${missing}`, capacity: 4 }), { code: 'ERR_REDIS_UNAVAILABLE' })
  await assert.rejects(RedisAllocator.open('x', { redis: 'redis://127.0.0.1:1', capacity: 4 }), { code: 'ERR_REDIS_UNAVAILABLE' })
  assert.ok(Date.now() - started < 2000)

  const own = await startRedis(t)
  const Redis = require('ioredis')
  const ioredis = new Redis({ path: path.join(own.dir, 'redis.sock') })
  t.after(() => ioredis.disconnect())
  const viaUrl = await RedisAllocator.open('stopped', { redis: own.url, capacity: 4, timeoutMs: 300, leaseMs: 600 })
  const viaClient = await RedisAllocator.open('stopped', { redis: ioredis, capacity: 4, timeoutMs: 300, leaseMs: 600 })
  t.after(() => viaUrl.close())
  t.after(() => viaClient.close())
  const lease = await viaUrl.acquire()
  const lost = new Promise((resolve) => viaUrl.once('lost', resolve))
  process.kill(own.pid, 'SIGSTOP')
  try {
    for (const ids of [viaUrl, viaClient]) {
      started = Date.now()
      await assert.rejects(ids.allocate(), { code: 'ERR_REDIS_TIMEOUT' })
      const took = Date.now() - started
      assert.ok(took >= 250 && took < 1500, `failed after ${took} ms`)
    }
    await lost
    assert.equal(lease.signal.aborted, true, 'a holder that cannot renew learns it lost its lease')
  } finally {
    process.kill(own.pid, 'SIGCONT')
  }
  assert.equal(typeof (await viaUrl.allocate()), 'number', 'works again once the server answers')
  assert.equal(typeof (await viaClient.allocate()), 'number')
  await own.kill9()
  await assert.rejects(viaUrl.allocate(), { code: 'ERR_REDIS_UNAVAILABLE' })
  await own.restart()
  // This server keeps nothing across a restart: the allocator is gone, and is never silently
  // made again (a holder could still count on a number the new one would hand out).
  for (const call of [() => viaUrl.allocate(), () => viaUrl.count(), () => viaUrl.isAllocated(0)]) {
    await assert.rejects(call(), { code: 'ERR_ALLOCATOR_GONE' })
  }
  // Those ended the lease (the keys are gone): a number held under it is not freed from here.
  await assert.rejects(viaUrl.free(0), { code: 'ERR_NOT_ALLOCATED' })
  await assert.rejects(viaUrl.allocate(), { code: 'ERR_ALLOCATOR_GONE' }, 'not made again by the next lease either')
})

test('SIGKILL of redis-server (appendonly yes, appendfsync always) and a restart while 3 processes churn: no number held twice, tokens never repeat', async (t) => {
  const own = await startRedis(t, { appendonly: true })
  const name = unique('restart')
  const witnessDir = fs.mkdtempSync(path.join(os.tmpdir(), 'numballoc-redis-witness-'))
  t.after(() => fs.rmSync(witnessDir, { recursive: true, force: true }))
  const children = Array.from({ length: 3 }, () => forkFixture('redis-churn.js', [own.url, name, 16, witnessDir]))
  t.after(() => children.forEach((child) => child.exitCode === null && child.kill('SIGKILL')))
  await Promise.all(children.map((child) => waitFor(child, (m) => m === 'ready')))
  await sleep(500)
  await own.kill9()
  await sleep(300)
  await own.restart()
  await sleep(1000)
  const reports = children.map((child) => waitFor(child, (m) => m.taken !== undefined))
  for (const child of children) child.send('stop')
  const results = await Promise.all(reports)
  for (const { overlaps } of results) assert.deepEqual(overlaps, [])
  const tokens = results.flatMap((r) => r.tokens)
  assert.equal(new Set(tokens).size, tokens.length, 'no token handed out twice')
  for (const r of results) {
    assert.ok(r.taken > 50, `each process churned: ${JSON.stringify(r)}`)
    for (let i = 1; i < r.tokens.length; i++) assert.ok(r.tokens[i] > r.tokens[i - 1])
  }
  assert.ok(
    results.some((r) => r.errors.ERR_REDIS_UNAVAILABLE || r.errors.ERR_REDIS_TIMEOUT),
    `the processes saw the server go: ${JSON.stringify(results.map((r) => r.errors))}`,
  )
  assert.deepEqual(fs.readdirSync(witnessDir), [])
})

test('hostile input: keys that are not an allocator, keys deleted under an open one, wrong types and huge counts', async (t) => {
  const client = raw(t)
  const squatted = unique('squat')
  await client.call(['SET', `numballoc:{${squatted}}:meta`, 'not a hash'])
  await assert.rejects(RedisAllocator.open(squatted, { redis: server.url, capacity: 4 }), { code: 'ERR_INCOMPATIBLE_REGION' })
  const partial = unique('partial')
  await client.call(['SET', `numballoc:{${partial}}:bits`, 'x'])
  await assert.rejects(RedisAllocator.open(partial, { redis: server.url, capacity: 4 }), { code: 'ERR_INCOMPATIBLE_REGION' })
  const future = unique('future')
  await client.call(['HSET', `numballoc:{${future}}:meta`, 'format', '99', 'capacity', '4'])
  await assert.rejects(RedisAllocator.open(future, { redis: server.url, capacity: 4 }), { code: 'ERR_INCOMPATIBLE_REGION' })

  const ids = await open(t, unique('deleted'), { capacity: 4 })
  await ids.allocate()
  await client.call(['DEL', `numballoc:{${ids.name}}:meta`])
  await assert.rejects(ids.allocate(), { code: 'ERR_ALLOCATOR_GONE' })

  const big = await open(t, unique('big'), { capacity: MAX_REDIS_CAPACITY })
  await assert.rejects(big.allocateMany(1e9), { code: 'ERR_OUT_OF_RANGE' })
  await assert.rejects(big.allocateBlock(1025), { code: 'ERR_OUT_OF_RANGE' })
  await assert.rejects(big.allocateMany(1025), { code: 'ERR_OUT_OF_RANGE' })
  await assert.rejects(big.freeMany({ length: Infinity }), { code: 'ERR_OUT_OF_RANGE' })
  await assert.rejects(big.freeMany([1, '2']), { code: 'ERR_INVALID_ARG_TYPE' })
  await assert.rejects(big.freeMany(5), { code: 'ERR_INVALID_ARG_TYPE' })
  assert.equal(await big.allocateBlock(4, 2 ** 40), 0)
  assert.equal(await big.tryAllocateBlock(4, 2 ** 40), null)
  assert.equal(typeof (await big.allocate()), 'number')
  await assert.rejects(RedisAllocator.open('x', { redis: server.url, capacity: MAX_REDIS_CAPACITY + 1 }), { code: 'ERR_OUT_OF_RANGE' })
  for (const name of ['', 'a}', 'with space', 'x'.repeat(201), 'tab\t', 'a\ud800', 'zero\u200bwidth', 'rtl\u202eoverride', 42]) {
    await assert.rejects(RedisAllocator.open(name, { redis: server.url, capacity: 4 }), {
      code: typeof name === 'string' ? 'ERR_INVALID_NAME' : 'ERR_INVALID_ARG_TYPE',
    })
  }
  for (const redis of [
    '',
    'redis://',
    'ftp://x',
    'redis://h/notadb',
    'redis://%zz@h',
    'unix:///tmp/%zz.sock',
    'unix://relative/redis.sock',
    {},
    { call() {} },
    null,
  ]) {
    await assert.rejects(RedisAllocator.open('x', { redis, capacity: 4 }), { code: /^ERR_INVALID_(URL|ARG_TYPE)$/ }, JSON.stringify(redis))
  }
  await assert.rejects(RedisAllocator.open('x', { capacity: 4 }), { code: 'ERR_INVALID_ARG_TYPE' })
  // A password never shows in an error.
  await assert.rejects(RedisAllocator.open('x', { redis: 'foo://user:SECRET@h', capacity: 4 }), (error) => !error.message.includes('SECRET'))
  assert.throws(() => new RedisAllocator(), { code: 'ERR_ILLEGAL_CONSTRUCTOR' })
  assert.throws(() => RedisAllocator(), { code: 'ERR_CONSTRUCT_CALL_REQUIRED' })
})

test('a process that opens an allocator by URL and never closes it exits by itself; its numbers come back after the lease', async (t) => {
  const name = unique('exits')
  const code = `
    const { RedisAllocator } = require(${JSON.stringify(path.join(__dirname, '..'))})
    RedisAllocator.open(${JSON.stringify(name)}, { redis: ${JSON.stringify(server.url)}, capacity: 2, leaseMs: 300 })
      .then((ids) => ids.allocate())
      .then((n) => console.log(n))`
  const started = Date.now()
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (chunk) => (out += chunk))
  const exitCode = await new Promise((resolve) => child.once('exit', resolve))
  assert.equal(exitCode, 0)
  assert.ok(Date.now() - started < 5000)
  const n = Number(out.trim())
  const ids = await open(t, name, { capacity: 2 })
  assert.equal(await ids.isAllocated(n), true)
  await sleep(400)
  assert.equal(await ids.reclaim(), 1)
})

test('replicas: a write waits for the replicas asked for; when they do not confirm, ERR_REDIS_REPLICAS and the number is given back', async (t) => {
  const primary = await startRedis(t, { tcp: true })
  const replica = await startRedis(t, { replicaOf: primary })
  const ids = await RedisAllocator.open('replicated', { redis: primary.url, capacity: 4, replicas: 1, timeoutMs: 1000 })
  t.after(() => ids.close())
  const n = await ids.allocate()
  const onReplica = raw(t, replica.url)
  assert.equal(await onReplica.call(['GETBIT', 'numballoc:{replicated}:bits', n]), 1, 'the replica has the grant')
  process.kill(replica.pid, 'SIGSTOP')
  try {
    const before = await ids.count()
    await assert.rejects(ids.allocate(), { code: 'ERR_REDIS_REPLICAS' })
    assert.equal(await ids.count(), before, 'the unconfirmed grant was given back on the primary')
  } finally {
    process.kill(replica.pid, 'SIGCONT')
  }
})

test('close() aborts the signals of leases still held (nothing renews them), not of leases released', async () => {
  const ids = await RedisAllocator.open(unique('close-signals'), { redis: server.url, capacity: 4 })
  const released = await ids.acquire()
  const held = await ids.acquire()
  await released.release()
  await ids.close()
  assert.equal(released.signal.aborted, false)
  assert.equal(held.signal.aborted, true)
  assert.equal(held.signal.reason.code, 'ERR_LEASE_LOST')
  await held.release() // the handle is closed: nothing to do, and no error
})

test('listRedis, inspectRedis, reclaimRedis and `numballoc list|inspect|reclaim --redis URL`: holders are leases, dead once ended', async (t) => {
  const { inspectRedis, reclaimRedis } = require('..')
  const name = unique('inspected')
  const ids = await open(t, name, { capacity: 100, policy: 'lowest' })
  await ids.allocateMany(30)
  const log = path.join(os.tmpdir(), unique('inspected-log'))
  t.after(() => fs.rmSync(log, { force: true }))
  const child = forkFixture('redis-holder.js', [server.url, name, 100, 300, log, 'lowest'])
  await waitFor(child, (m) => m.value !== undefined)
  await kill9(child)
  await sleep(400) // its lease has ended; nobody has reclaimed it yet

  assert.ok((await listRedis({ redis: server.url })).includes(name))
  const report = await inspectRedis(name, { redis: server.url, cells: 10 })
  assert.equal(report.capacity, 100)
  assert.equal(report.policy, 'lowest')
  assert.equal(report.inUse, 31)
  assert.deepEqual(report.cells, [10, 10, 10, 1, 0, 0, 0, 0, 0, 0])
  assert.equal(report.cellSize, 10)
  assert.deepEqual(
    report.holders.map((h) => [h.pid, h.alive, h.count]).sort((a, b) => b[2] - a[2]),
    [
      [process.pid, true, 30],
      [child.pid, false, 1],
    ],
  )
  assert.equal(report.heldByDead, 1)
  assert.ok(report.token >= 2)

  const listed = cli('list', '--redis', server.url)
  assert.equal(listed.status, 0, listed.err)
  assert.match(listed.out, new RegExp(`${name}\\s+numbers 0-99 \\(lowest\\)\\s+100\\s+31\\s+1\\s+1\\s+1`))
  const shown = cli('inspect', name, '--redis', server.url, '--cells', '10')
  assert.equal(shown.status, 0, shown.err)
  assert.match(shown.out, /holders {3}2 leases: 1 alive, 1 ended holding 1/)
  assert.match(shown.out, new RegExp(`${child.pid}\\s+${os.hostname()}\\s+1\\s+ended \\d+ ms ago`))
  assert.match(shown.out, / {2}0 ███░······\n/)
  const json = JSON.parse(cli('inspect', name, '--redis', server.url, '--json').out)
  assert.equal(json.heldByDead, 1)
  assert.equal(cli('inspect', 'no-such', '--redis', server.url).status, 1)
  assert.equal(cli('destroy', name, '--redis', server.url).status, 2)
  assert.equal(cli('list', '--redis', server.url, '--dir', '/tmp').status, 2)
  assert.match(cli('list', '--redis', 'unix:///nonexistent/redis.sock').err, /^numballoc: cannot reach Redis/)

  assert.equal(JSON.parse(cli('reclaim', name, '--redis', server.url, '--json').out).reclaimed, 1)
  assert.equal(await reclaimRedis(name, { redis: server.url }), 0)
  assert.equal((await inspectRedis(name, { redis: server.url })).inUse, 30)
  await assert.rejects(inspectRedis('no-such', { redis: server.url }), { code: 'ENOENT' })
  await assert.rejects(inspectRedis(name, { redis: server.url, cells: 0 }), { code: 'ERR_OUT_OF_RANGE' })
  // An option never comes from Object.prototype (briefly polluted here, inside one await).
  const cells = (await inspectRedis(name, { redis: server.url })).cells.length
  Object.prototype.cells = 2
  try {
    assert.equal((await inspectRedis(name, { redis: server.url })).cells.length, cells)
  } finally {
    delete Object.prototype.cells
  }
})

test('after a lease the server ended, the new lease has its own deadline: cut off from Redis, its signal aborts on time without being read', async (t) => {
  const own = await startRedis(t)
  const ids = await RedisAllocator.open('redeadline', { redis: own.url, capacity: 4, leaseMs: 300, timeoutMs: 200 })
  t.after(() => ids.close())
  const first = await ids.acquire()
  const { owner } = await ids.holderOf(first.value)
  await raw(t, own.url).call(['ZADD', 'numballoc:{redeadline}:leases', '0', owner])
  const second = await ids.acquire() // the server says the first lease ended: a new one
  let abortedAt = null
  second.signal.addEventListener('abort', () => (abortedAt = Date.now()))
  const cutAt = Date.now()
  process.kill(own.pid, 'SIGSTOP')
  try {
    await sleep(900)
  } finally {
    process.kill(own.pid, 'SIGCONT')
  }
  assert.notEqual(abortedAt, null, 'the signal aborted by itself')
  // Its end: 99% of leaseMs after the acquire that took it (the heartbeat, a third of a lease
  // later, would be too late).
  assert.ok(abortedAt - cutAt <= 370, `aborted ${abortedAt - cutAt} ms after the server stopped answering`)
})

test("a release retried after it timed out never frees the number granted next (grants are freed by their token), and the released lease's signal never aborts after", async (t) => {
  // The reply to one free held back past the timeout: the free runs, its answer comes too late.
  let holdBack = false
  const client = ioredisThrough(t, (value, args) => {
    if (!(holdBack && args.includes('free'))) return value
    holdBack = false
    return sleep(500).then(() => value)
  })
  const ids = await RedisAllocator.open(unique('retried'), { redis: client, capacity: 1, timeoutMs: 300 })
  t.after(() => ids.close())
  const first = await ids.acquire()
  holdBack = true
  await assert.rejects(first.release(), { code: 'ERR_REDIS_TIMEOUT' })
  assert.equal(first.released, false, 'not known to be released')
  const second = await ids.acquire() // the free ran: the same handle gets the number again
  assert.equal(second.value, first.value)
  await first.release() // its grant is gone: nothing to do
  assert.equal(first.released, true)
  assert.equal(await ids.isAllocated(second.value), true, 'the next grant of the number is untouched')
  await second.release()
  assert.equal(await ids.isAllocated(second.value), false)
  // Released (by the attempt that timed out): closing the handle is no loss of it.
  await ids.close()
  assert.equal(first.signal.aborted, false, 'the signal of a released lease aborted')
})

test('a Redis stopped past a timeout: the calls that timed out fail, and the calls after them are answered once it goes on', async (t) => {
  const own = await startRedis(t)
  const ids = await RedisAllocator.open('stalled', { redis: own.url, capacity: 4, timeoutMs: 300, leaseMs: 60_000 })
  t.after(() => ids.close())
  const n = await ids.allocate()
  process.kill(own.pid, 'SIGSTOP')
  try {
    await assert.rejects(ids.free(n), { code: 'ERR_REDIS_TIMEOUT' })
  } finally {
    process.kill(own.pid, 'SIGCONT')
  }
  assert.equal(await ids.count(), 0, 'the free ran, and its late answer was not taken for this one')
  assert.equal(typeof (await ids.allocate()), 'number')
})

test('a reply handled after the lease ended is not used: the number is taken again under a new lease', async (t) => {
  // One allocation reply handed over only after the event loop was stuck for longer than the
  // lease (a long synchronous task, a GC pause).
  let stall = false
  const client = ioredisThrough(t, (value, args) => {
    if (stall && args.includes('alloc')) {
      stall = false
      const until = Date.now() + 400
      while (Date.now() < until);
    }
    return value
  })
  const ids = await RedisAllocator.open(unique('late'), { redis: client, capacity: 4, leaseMs: 300, policy: 'lowest' })
  t.after(() => ids.close())
  const owner = (await ids.holderOf(await ids.allocate())).owner
  await ids.free(0)
  const lost = []
  ids.on('lost', () => lost.push(Date.now()))
  stall = true
  const n = await ids.allocate()
  assert.equal(lost.length, 1, 'the lease was declared lost')
  assert.notEqual((await ids.holderOf(n)).owner, owner, 'the number is held under a new lease, not the lost one')
})

test('every call answers or fails within timeoutMs, whatever it chains (connect, script load, lease)', async (t) => {
  const own = await startRedis(t)
  const slow = await slowProxy(t, own, 250)
  const started = Date.now()
  // A fresh server: open needs the script sent twice (EVALSHA, then EVAL) and a lease, each
  // 250 ms late: longer than the 400 ms allowed for the whole call.
  await assert.rejects(RedisAllocator.open('bounded', { redis: slow.url, capacity: 4, timeoutMs: 400 }), { code: 'ERR_REDIS_TIMEOUT' })
  const took = Date.now() - started
  assert.ok(took >= 390 && took < 800, `open failed after ${took} ms`)
})

test('an acquire() answered after close() rejects with ERR_REGION_CLOSED: no lease whose signal could never abort', async (t) => {
  // Allocation replies 200 ms late: close() comes in between.
  const client = ioredisThrough(t, (value, args) => (args.includes('alloc') ? sleep(200).then(() => value) : value))
  const ids = await RedisAllocator.open(unique('closing'), { redis: client, capacity: 4 })
  const pending = ids.acquire()
  await sleep(50) // sent, not answered
  await ids.close()
  await assert.rejects(pending, { code: 'ERR_REGION_CLOSED' })
})

test("close() racing calls in flight: they fail with ERR_REGION_CLOSED, no 'lost', no lease taken after it; with release nothing is left held", async () => {
  for (let round = 0; round < 6; round++) {
    const release = round % 2 === 0
    const name = unique('close-race')
    const ids = await RedisAllocator.open(name, { redis: server.url, capacity: 64, leaseMs: 60000 })
    const lost = []
    ids.on('lost', (error) => lost.push(error))
    await ids.allocate() // the lease is taken: the calls below go straight out
    const calls = Array.from({ length: 16 }, (_, i) => (i % 2 ? ids.allocate() : ids.acquire()))
    calls.push(ids.count(), ids.isAllocated(0), ids.holderOf(0), ids.reclaim())
    const settled = Promise.allSettled(calls) // handled at once: rejections are expected
    await ids.close({ release })
    for (const result of await settled) {
      if (result.status === 'rejected') assert.equal(result.reason.code, 'ERR_REGION_CLOSED', result.reason.message)
    }
    assert.deepEqual(lost, [], `round ${round}: close said 'lost' (${lost.map((e) => e.message)})`)
    const report = await inspectRedis(name, { redis: server.url })
    assert.ok(report.holders.length <= 1, `round ${round}: a lease taken after close`)
    if (release) {
      assert.equal(report.inUse, 0, `round ${round}: numbers still held after close({ release: true })`)
      assert.deepEqual(report.holders, [], `round ${round}: the lease outlived close({ release: true })`)
    } else {
      assert.ok(report.inUse >= 1, 'without release, the numbers stay held until the lease ends')
      const raw = new RespClient(server.url, 5000)
      await raw.call(['DEL', ...['meta', 'bits', 'held', 'byowner', 'leases', 'owners'].map((key) => `numballoc:{${name}}:${key}`)])
      raw.close()
    }
  }
})

test('close() called again from an abort listener of its own leases, and close() while a call waits for a new lease: no crash, ERR_REGION_CLOSED', async () => {
  const ids = await RedisAllocator.open(unique('close-nested'), { redis: server.url, capacity: 8 })
  const lease = await ids.acquire()
  let nested = null
  lease.signal.addEventListener('abort', () => {
    nested = ids.close({ release: true })
  })
  await ids.close()
  assert.ok(nested, 'the abort listener ran')
  await nested // resolves: no second close racing the first over a closed connection

  // The lease is lost (a stalled event loop); close() begins while the next call registers anew.
  const other = await RedisAllocator.open(unique('close-registering'), { redis: server.url, capacity: 8, leaseMs: 100 })
  await other.allocate()
  other.once('lost', () => queueMicrotask(() => other.close()))
  const end = Date.now() + 150
  while (Date.now() < end);
  await assert.rejects(other.allocate(), { code: 'ERR_REGION_CLOSED' })
})

test('close() again from an abort listener when the first close({ release: true }) fails (Redis gone): no unhandled rejection', async (t) => {
  const own = await startRedis(t)
  const ids = await RedisAllocator.open(unique('close-failing'), { redis: own.url, capacity: 8, timeoutMs: 500 })
  const lease = await ids.acquire()
  let nested = null
  lease.signal.addEventListener('abort', () => {
    nested = ids.close() // its promise ignored, as a listener would
  })
  await own.kill9()
  await assert.rejects(ids.close({ release: true }), (error) => ['ERR_REDIS_UNAVAILABLE', 'ERR_REDIS_TIMEOUT'].includes(error.code))
  assert.ok(nested, 'the abort listener ran')
  assert.equal(await nested, undefined, 'a second close() resolves once the first is done')
})

test('close() at any point while an acquire() is answered: once close() resolves, no lease of the handle has a signal that never aborts', async (t) => {
  const hop = (depth) => (depth === 0 ? Promise.resolve() : Promise.resolve().then(() => hop(depth - 1)))
  for (let depth = 0; depth < 16; depth++) {
    const connection = raw(t)
    let onGrant = null
    // The app's client: when the allocation's answer arrives, close() follows `depth` microtasks later.
    const client = {
      status: 'ready',
      call: (command, ...args) =>
        connection.call([command, ...args]).then((reply) => {
          if (onGrant && args.includes('alloc')) onGrant()
          return reply
        }),
    }
    const ids = await RedisAllocator.open(unique('acquire-close'), { redis: client, capacity: 1 })
    let closed = null
    onGrant = () => {
      onGrant = null
      closed = hop(depth).then(() => ids.close())
    }
    const lease = await ids.acquire().catch((error) => {
      assert.equal(error.code, 'ERR_REGION_CLOSED', `depth ${depth}: ${error.message}`)
      return null
    })
    await closed
    if (lease) assert.equal(lease.signal.aborted, true, `depth ${depth}: a lease outlived close() with a live signal`)
  }
})

test('a client that is not what it claims: coded errors, no crash, no unhandled rejection', async (t) => {
  const unhandled = []
  const onUnhandled = (error) => unhandled.push(error)
  process.on('unhandledRejection', onUnhandled)
  t.after(() => process.off('unhandledRejection', onUnhandled))
  const fakes = [
    { status: 'ready', call: () => 42 }, // not a promise
    { status: 'ready', call: async () => 'OK' }, // not the script's reply
    {
      status: 'ready',
      call: () => {
        throw new Error('boom')
      },
    },
    { isOpen: true, sendCommand: () => new Promise(() => {}) }, // never answers
  ]
  for (const redis of fakes) {
    await assert.rejects(RedisAllocator.open('fake', { redis, capacity: 4, timeoutMs: 200 }), { code: /^ERR_REDIS(_UNAVAILABLE|_TIMEOUT)?$/ })
  }
  await sleep(300) // past every timer the calls set
  assert.deepEqual(unhandled, [])
})

test('a script never blocks the server for long: a block search on a fragmented bitmap and the reclaim of a holder of 20,000 numbers go a chunk at a time', async (t) => {
  const own = await startRedis(t)
  const client = raw(t, own.url)
  await client.call(['CONFIG', 'SET', 'slowlog-log-slower-than', '20000']) // 20 ms
  await client.call(['SLOWLOG', 'RESET'])
  const capacity = 2 ** 16
  const ids = await RedisAllocator.open('fragmented', { redis: own.url, capacity, policy: 'lowest', timeoutMs: 30_000 })
  t.after(() => ids.close())
  const all = []
  for (let i = 0; i < capacity / 1024; i++) all.push(...(await ids.allocateMany(1024)))
  const odd = all.filter((n) => n % 2 === 1)
  for (let i = 0; i < odd.length; i += 1024) await ids.freeMany(odd.slice(i, i + 1024))
  // Every other number free: no two in a row.
  assert.equal(await ids.tryAllocateBlock(2), null)
  assert.equal(await ids.count(), capacity / 2)
  // A holder of 20,000 numbers dies: its lease ends and they come back, a chunk per script.
  const name = 'big-holder'
  const code = `
    const { RedisAllocator } = require(${JSON.stringify(path.join(__dirname, '..'))})
    RedisAllocator.open(${JSON.stringify(name)}, { redis: ${JSON.stringify(own.url)}, capacity: 32768, leaseMs: 300, timeoutMs: 30000 })
      .then(async (ids) => { for (let i = 0; i < 20; i++) await ids.allocateMany(1000); console.log('held'); setInterval(() => {}, 1000) })`
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.after(() => kill9(child))
  await new Promise((resolve) => child.stdout.once('data', resolve))
  await kill9(child)
  await sleep(400)
  const other = await RedisAllocator.open(name, { redis: own.url, capacity: 32768, timeoutMs: 30_000 })
  t.after(() => other.close())
  // Opening reclaims a chunk already (each allocation script does); reclaim() the rest.
  assert.ok((await other.reclaim()) >= 20_000 - 1024)
  assert.equal(await other.count(), 0)
  const slow = await client.call(['SLOWLOG', 'GET', '10'])
  assert.deepEqual(
    slow.map((entry) => [entry[2], entry[3][0], entry[3][4] ?? '']),
    [],
    'scripts slower than 20 ms',
  )
})

test("the allocator's keys vanish under an open handle: its heartbeat says 'lost' at once", async (t) => {
  const ids = await open(t, unique('vanished'), { capacity: 4, leaseMs: 300 })
  const lease = await ids.acquire()
  const lost = new Promise((resolve) => ids.once('lost', resolve))
  await raw(t).call(['DEL', `numballoc:{${ids.name}}:meta`])
  const error = await lost
  assert.match(error.message, /gone/)
  assert.equal(lease.signal.aborted, true)
})

test('Redis Cluster: through ioredis and node-redis cluster clients, allocators of many names (so many slots) share their numbers', async (t) => {
  const { startCluster } = require('./redis-server.js')
  const Redis = require('ioredis')
  const { createCluster } = require('redis')
  const { ports } = await startCluster(t)
  const ioCluster = new Redis.Cluster([{ host: '127.0.0.1', port: ports[0] }])
  t.after(() => ioCluster.disconnect())
  const nodeCluster = createCluster({ rootNodes: [{ url: `redis://127.0.0.1:${ports[1]}` }] })
  await nodeCluster.connect()
  t.after(() => nodeCluster.close?.() ?? nodeCluster.disconnect())
  const slots = new Set()
  const opened = []
  for (const name of ['worker-ids', 'shards', 'seats', 'a', 'b', 'c']) {
    const first = await RedisAllocator.open(name, { redis: ioCluster, capacity: 8, policy: 'lowest' })
    const second = await RedisAllocator.open(name, { redis: nodeCluster, capacity: 8, policy: 'lowest' })
    opened.push(first, second)
    const got = [await first.allocate(), await second.allocate(), ...(await first.allocateMany(3)), await second.allocateBlock(2, 2)]
    assert.deepEqual(got, [0, 1, 2, 3, 4, 6], name)
    assert.equal(await second.count(), 7)
    assert.equal((await second.holderOf(0)).pid, process.pid)
    await assert.rejects(second.free(0), { code: 'ERR_NOT_ALLOCATED' }, "the other handle's")
    await first.free(0)
    assert.equal(await second.allocate(), 0)
    slots.add(await ioCluster.cluster('KEYSLOT', `numballoc:{${name}}:meta`))
  }
  assert.ok(slots.size > 1)
  await assert.rejects(RedisAllocator.open('r', { redis: ioCluster, capacity: 8, replicas: 1 }), { code: 'ERR_INVALID_ARG_VALUE' })
  await assert.rejects(listRedis({ redis: nodeCluster }), { code: 'ERR_INVALID_ARG_VALUE' })
  // Before the clients are closed (the test's after hooks).
  for (const ids of opened) await ids.close({ release: true })
})

test("TLS (rediss://): works with the server's CA trusted (NODE_EXTRA_CA_CERTS), and says why it cannot connect without", async (t) => {
  const own = await startRedis(t, { tls: true })
  const code = `
    const { RedisAllocator } = require(${JSON.stringify(path.join(__dirname, '..'))})
    RedisAllocator.open('tls', { redis: ${JSON.stringify(own.tlsUrl)}, capacity: 4, timeoutMs: 3000, policy: 'lowest' })
      .then(async (ids) => { const n = await ids.allocate(); await ids.close({ release: true }); console.log(JSON.stringify({ n })) })
      .catch((error) => console.log(JSON.stringify({ code: error.code, message: error.message })))`
  const run = (env) =>
    JSON.parse(require('node:child_process').execFileSync(process.execPath, ['-e', code], { env: { ...process.env, ...env }, encoding: 'utf8' }))
  assert.deepEqual(run({ NODE_EXTRA_CA_CERTS: own.caFile }), { n: 0 })
  const refused = run({ NODE_EXTRA_CA_CERTS: '' })
  assert.equal(refused.code, 'ERR_REDIS_UNAVAILABLE')
  assert.match(refused.message, /certificate/)
})

test('a key of the allocator evicted or deleted: every call fails with ERR_ALLOCATOR_GONE and the lease is lost at once, never a held number handed out again; tokens of an allocator made again start above the old ones', async (t) => {
  const client = raw(t)
  for (const part of ['bits', 'held', 'byowner', 'leases', 'owners', 'meta']) {
    const name = unique(`evicted-${part}`)
    const ids = await open(t, name, { capacity: 4, policy: 'lowest' })
    const lease = await ids.acquire()
    const other = await open(t, name, { capacity: 4, policy: 'lowest' })
    await client.call(['DEL', `numballoc:{${name}}:${part}`]) // as maxmemory-policy allkeys-lru would
    await assert.rejects(other.allocate(), { code: 'ERR_ALLOCATOR_GONE' }, part)
    await assert.rejects(ids.allocate(), { code: 'ERR_ALLOCATOR_GONE' }, part)
    assert.equal(lease.signal.aborted, true, part)
    await assert.rejects(
      RedisAllocator.open(name, { redis: server.url, capacity: 4, policy: 'lowest' }),
      { code: part === 'meta' ? 'ERR_INCOMPATIBLE_REGION' : 'ERR_ALLOCATOR_GONE' },
      part,
    )
  }
  // Lost altogether (FLUSHALL, a restart without persistence) and made again: tokens still grow.
  const name = unique('remade')
  const first = await open(t, name, { capacity: 4 })
  const before = (await first.acquire()).token
  const keys = await client.call(['KEYS', `numballoc:{${name}}:*`])
  await client.call(['DEL', ...keys])
  const again = await open(t, name, { capacity: 4 })
  assert.ok((await again.acquire()).token > before)
})

test('numbers granted to calls that had already timed out are given back, not leaked until the handle closes', async (t) => {
  const own = await startRedis(t)
  const ids = await RedisAllocator.open('hiccup', { redis: own.url, capacity: 8, timeoutMs: 300, leaseMs: 60_000 })
  t.after(() => ids.close())
  process.kill(own.pid, 'SIGSTOP')
  let settled
  try {
    settled = Promise.allSettled(Array.from({ length: 8 }, () => ids.allocate()))
    await sleep(450) // a hiccup longer than the calls wait, shorter than the connection does
  } finally {
    process.kill(own.pid, 'SIGCONT')
  }
  for (const result of await settled) assert.equal(result.reason?.code, 'ERR_REDIS_TIMEOUT')
  let count = 8
  for (let i = 0; count > 0 && i < 50; i++) {
    await sleep(20)
    count = await ids.count()
  }
  assert.equal(count, 0, 'the numbers granted late went back')
})

test('a server with a password: URLs carry it (TCP and unix://:pw@localhost/path), and neither the command nor an error shows it', async (t) => {
  const own = await startRedis(t, { tcp: true, password: 'S3cret word' })
  for (const url of [own.url, own.tcpUrl]) {
    const ids = await RedisAllocator.open('guarded', { redis: url, capacity: 4 })
    assert.equal(typeof (await ids.allocate()), 'number')
    await ids.close({ release: true })
  }
  await assert.rejects(RedisAllocator.open('guarded', { redis: own.tcpUrl.replace('S3cret', 'Wrong'), capacity: 4 }), (error) => {
    assert.equal(error.code, 'ERR_REDIS')
    assert.doesNotMatch(error.message, /Wrong|S3cret/)
    return true
  })
  for (const args of [['inspect', 'guarded'], ['inspect', 'no-such'], ['list']]) {
    const { out, err } = cli(...args, '--redis', own.tcpUrl)
    assert.doesNotMatch(out + err, /S3cret/, args.join(' '))
  }
  assert.match(cli('list', '--redis', own.tcpUrl).out, /guarded/)
})

test("free(n), freeMany and freeBlock called as the lease is found lost free nothing under the handle's next lease: ERR_NOT_ALLOCATED, and the number acquired meanwhile stays held", async (t) => {
  const frees = {
    free: (ids) => ids.free(0),
    freeMany: (ids) => ids.freeMany([0]),
    freeBlock: (ids) => ids.freeBlock(0, 1),
  }
  for (const [label, free] of Object.entries(frees)) {
    const name = unique('free-retarget')
    const ids = await open(t, name, { capacity: 1, policy: 'lowest', leaseMs: 300 })
    assert.equal(await ids.allocate(), 0)
    const until = Date.now() + 400
    while (Date.now() < until); // a stall past the lease: it is over here, and maybe on the server
    // Done with 0 (of the lease just lost), the app takes a number at once: the same 0, under a new lease.
    const [lease, freed] = await Promise.all([
      ids.acquire(),
      free(ids).then(
        () => 'freed',
        (error) => error.code,
      ),
    ])
    assert.equal(freed, 'ERR_NOT_ALLOCATED', `${label}: a number of a lost lease is never freed from here`)
    assert.equal(lease.value, 0)
    assert.equal((await ids.holderOf(0))?.token, lease.token, `${label}: freed the grant of the new lease`)
    const other = await open(t, name, { capacity: 1, policy: 'lowest' })
    assert.equal(await other.tryAllocate(), null, `${label}: handed out again while its lease's signal is live`)
    assert.equal(lease.signal.aborted, false)
  }
})

test('a plain free(n) of a number of a lost lease, called after the handle was given n again as a RemoteLease, frees nothing: the lease keeps it', async (t) => {
  const name = unique('free-leased')
  const ids = await open(t, name, { capacity: 1, policy: 'lowest', leaseMs: 300 })
  const lost = new Promise((resolve) => ids.once('lost', resolve))
  assert.equal(await ids.allocate(), 0)
  const until = Date.now() + 400
  while (Date.now() < until);
  await lost
  const lease = await ids.acquire() // 0 again, under the new lease
  assert.equal(lease.value, 0)
  // The app, done with the 0 it took first (of the lost lease), frees it.
  await assert.rejects(ids.free(0), { code: 'ERR_NOT_ALLOCATED' })
  await assert.rejects(ids.freeMany([0]), { code: 'ERR_NOT_ALLOCATED' })
  const other = await open(t, name, { capacity: 1, policy: 'lowest' })
  assert.equal(await other.tryAllocate(), null, 'the number of a live RemoteLease was freed and handed out again')
  assert.equal(lease.signal.aborted, false)
  await lease.release()
  assert.equal(await other.tryAllocate(), 0)
})

test('a free answered only after the lease was lost here is not sent again under the next lease, where it would free a number granted since', async (t) => {
  let onFree = null
  const client = ioredisThrough(t, (value, args) => {
    if (onFree && args.includes('free')) {
      const hook = onFree
      onFree = null
      hook()
    }
    return value
  })
  const name = unique('late-free')
  const ids = await RedisAllocator.open(name, { redis: client, capacity: 1, policy: 'lowest', leaseMs: 300 })
  t.after(() => ids.close())
  assert.equal(await ids.allocate(), 0)
  let acquired = null
  onFree = () => {
    // The answer comes as the event loop stalls past the lease; running again, the app takes a number.
    const until = Date.now() + 400
    while (Date.now() < until);
    acquired = ids.acquire()
  }
  const freed = await ids.free(0).then(
    () => 'freed',
    (error) => error.code,
  )
  const lease = await acquired
  assert.equal(lease.value, 0)
  const other = await open(t, name, { capacity: 1, policy: 'lowest' })
  assert.equal(await other.tryAllocate(), null, "the new lease's number was freed under it and handed out again")
  assert.equal((await other.holderOf(0))?.token, lease.token)
  assert.equal(lease.signal.aborted, false)
  assert.equal(freed, 'freed', 'it ran, once, under the lease it was meant for')
})

test('a reconnect whose AUTH or SELECT fails (the server stalled, a password changed) does not break the handle for good: calls work again once Redis answers', async (t) => {
  const own = await startRedis(t, { password: 'pw' })
  const admin = raw(t, own.url)
  const ids = await RedisAllocator.open('sticky', { redis: `${own.url}?db=1`, capacity: 8, timeoutMs: 200, leaseMs: 60_000 })
  t.after(() => ids.close())
  await ids.allocate()
  // The connection breaks, and the server stalls just as the handle connects again.
  await admin.call(['CLIENT', 'KILL', 'TYPE', 'normal']) // every client but this one
  await sleep(100) // the handle sees its connection close
  process.kill(own.pid, 'SIGSTOP')
  try {
    await assert.rejects(ids.allocate(), { code: 'ERR_REDIS_TIMEOUT' })
    await sleep(300) // past the connection's own bound (twice timeoutMs): its AUTH has timed out too
  } finally {
    process.kill(own.pid, 'SIGCONT')
  }
  assert.equal(typeof (await ids.allocate()), 'number', 'works once the server answers')
  assert.equal(await raw(t, `${own.url}?db=1`).call(['EXISTS', 'numballoc:{sticky}:meta']), 1, 'in database 1')
  // The password changes under the handle, then changes back.
  await admin.call(['CONFIG', 'SET', 'requirepass', 'other'])
  await admin.call(['CLIENT', 'KILL', 'TYPE', 'normal'])
  await sleep(100)
  await assert.rejects(ids.allocate(), { code: 'ERR_REDIS', message: /WRONGPASS/ })
  await admin.call(['CONFIG', 'SET', 'requirepass', 'pw'])
  assert.equal(typeof (await ids.allocate()), 'number', 'works once the password is right again')
})

test('timeoutMs up to 2^31 - 1 works: the timers that wait twice as long stay within what Node can wait (no TimeoutOverflowWarning)', async (t) => {
  const warnings = []
  const onWarning = (warning) => warnings.push(`${warning.name}: ${warning.message}`)
  process.on('warning', onWarning)
  t.after(() => process.off('warning', onWarning))
  const client = ioredisThrough(t, (value) => value)
  for (const timeoutMs of [2 ** 30 + 1, 2 ** 31 - 1]) {
    for (const redis of [server.url, client]) {
      const name = unique('long-timeout')
      const ids = await RedisAllocator.open(name, { redis, capacity: 4, timeoutMs })
      assert.equal(typeof (await ids.allocate()), 'number')
      assert.equal((await inspectRedis(name, { redis, timeoutMs })).inUse, 1)
      assert.ok((await listRedis({ redis, timeoutMs })).includes(name))
      await ids.close({ release: true })
    }
  }
  await sleep(10) // warnings are emitted on a later tick
  assert.deepEqual(warnings, [])
})

test('close({ release: true }) while a new lease is being registered with a stopped server answers within timeoutMs', async (t) => {
  const own = await startRedis(t)
  const ids = await RedisAllocator.open('close-bounded', { redis: own.url, capacity: 4, leaseMs: 300, timeoutMs: 500 })
  await ids.allocate()
  process.kill(own.pid, 'SIGSTOP')
  try {
    await sleep(400) // the lease is lost here
    const call = ids.allocate().catch((error) => error) // registers a new lease, which goes unanswered
    await sleep(50)
    const started = Date.now()
    const closed = await ids.close({ release: true }).then(
      () => null,
      (error) => error,
    )
    const took = Date.now() - started
    assert.ok(took < 700, `close({ release: true }) took ${took} ms with timeoutMs 500`)
    if (closed !== null) assert.equal(closed.code, 'ERR_REDIS_TIMEOUT')
    assert.equal((await call).code, 'ERR_REGION_CLOSED')
  } finally {
    process.kill(own.pid, 'SIGCONT')
  }
})

test(
  'listRedis and reclaimRedis are bounded as a whole by timeoutMs: against a server that never says it is done, ERR_REDIS_TIMEOUT, and they stop asking',
  { timeout: 10_000 },
  async (t) => {
    const { reclaimRedis } = require('..')
    const name = unique('endless')
    await (await RedisAllocator.open(name, { redis: server.url, capacity: 4 })).close()
    let asked = 0
    // Every SCAN says there is more (a cursor that never comes back to 0), and so does every reclaim.
    const client = ioredisThrough(t, (value, args) => {
      asked++
      if (args[1] === 'MATCH') return ['1', []]
      if (args.includes('reclaim')) return [0, 0, 1]
      return value
    })
    for (const call of [() => listRedis({ redis: client, timeoutMs: 300 }), () => reclaimRedis(name, { redis: client, timeoutMs: 300 })]) {
      const started = Date.now()
      await assert.rejects(call(), { code: 'ERR_REDIS_TIMEOUT' })
      const took = Date.now() - started
      assert.ok(took >= 290 && took < 800, `failed after ${took} ms`)
      const before = asked
      await sleep(100)
      assert.ok(asked <= before + 1, `it went on asking: ${asked - before} more commands`)
    }
  },
)

test("keys of the name that are not an allocator's: inspectRedis, reclaimRedis, open and `numballoc inspect|list --redis` say ERR_INCOMPATIBLE_REGION and change nothing; damaged while in use, ERR_ALLOCATOR_GONE and the lease ends at once", async (t) => {
  const { reclaimRedis } = require('..')
  const client = raw(t)
  const key = (name, part) => `numballoc:{${name}}:${part}`
  const made = async (name) => (await RedisAllocator.open(name, { redis: server.url, capacity: 16, policy: 'lowest' })).close()
  const names = {}
  names.meta = unique('string-meta')
  await client.call(['SET', key(names.meta, 'meta'), 'not a hash'])
  names.bits = unique('set-bits')
  await made(names.bits)
  await client.call(['DEL', key(names.bits, 'bits')])
  await client.call(['SADD', key(names.bits, 'bits'), 'x'])
  names.capacity = unique('bad-capacity')
  await client.call(['HSET', key(names.capacity, 'meta'), 'format', '1', 'capacity', 'abc', 'policy', 'any', 'cursor', '0', 'token', '1', 'held', '0'])
  names.huge = unique('huge-capacity')
  await client.call(['HSET', key(names.huge, 'meta'), 'format', '1', 'capacity', '99999999999', 'policy', 'any', 'cursor', '0', 'token', '1', 'held', '0'])
  names.policy = unique('no-policy')
  await client.call(['HSET', key(names.policy, 'meta'), 'format', '1', 'capacity', '16', 'cursor', '0', 'token', '1', 'held', '0'])
  await client.call(['SETBIT', key(names.policy, 'bits'), '15', '0'])
  const snapshot = async (name) => {
    const keys = (await client.call(['KEYS', `numballoc:{${name}}:*`])).sort()
    return Promise.all(keys.map(async (k) => [k, await client.call(['TYPE', k]), await client.call(['DUMP', k])]))
  }
  const before = {}
  for (const name of Object.values(names)) before[name] = await snapshot(name)
  for (const [label, name] of Object.entries(names)) {
    await assert.rejects(inspectRedis(name, { redis: server.url }), { code: 'ERR_INCOMPATIBLE_REGION' }, `inspectRedis, ${label}`)
    await assert.rejects(reclaimRedis(name, { redis: server.url }), { code: 'ERR_INCOMPATIBLE_REGION' }, `reclaimRedis, ${label}`)
    await assert.rejects(RedisAllocator.open(name, { redis: server.url, capacity: 16 }), { code: 'ERR_INCOMPATIBLE_REGION' }, `open, ${label}`)
    const shown = cli('inspect', name, '--redis', server.url, '--json')
    assert.equal(shown.status, 1)
    assert.equal(JSON.parse(shown.err).error.code, 'ERR_INCOMPATIBLE_REGION', `numballoc inspect, ${label}`)
  }
  const listed = JSON.parse(cli('list', '--redis', server.url, '--json').out)
  for (const [label, name] of Object.entries(names)) {
    const row = listed.find((r) => r.name === name)
    assert.equal(row?.error?.code, 'ERR_INCOMPATIBLE_REGION', `numballoc list, ${label}: ${JSON.stringify(row)}`)
  }
  for (const name of Object.values(names)) assert.deepEqual(await snapshot(name), before[name], `${name} was modified`)

  // Replaced by another type of key while in use: the allocator is gone, and the lease with it.
  for (const [part, call] of [
    ['bits', (ids) => ids.allocate()],
    ['held', (ids) => ids.count()],
    ['leases', (ids) => ids.isAllocated(0)],
  ]) {
    const ids = await open(t, unique(`replaced-${part}`), { capacity: 4 })
    const lease = await ids.acquire()
    await client.call(['DEL', key(ids.name, part)])
    await client.call(['SADD', key(ids.name, part), 'x'])
    await assert.rejects(call(ids), { code: 'ERR_ALLOCATOR_GONE' }, part)
    assert.equal(lease.signal.aborted, true, `${part}: the lease did not end`)
    await assert.rejects(ids.allocate(), { code: 'ERR_ALLOCATOR_GONE' }, part)
  }
})

test('a URL with a user but no password is refused (ERR_INVALID_URL), as clients read it three ways; user:password is AUTH user password', async (t) => {
  const socket = server.url.slice('unix://'.length)
  for (const redis of [
    server.tcpUrl.replace('redis://', 'redis://bob@'),
    server.tcpUrl.replace('redis://', 'redis://bob:@'),
    `unix://bob@localhost${socket}`,
  ]) {
    await assert.rejects(RedisAllocator.open(unique('user-only'), { redis, capacity: 4 }), { code: 'ERR_INVALID_URL' }, redis)
  }
  const admin = raw(t)
  await admin.call(['ACL', 'SETUSER', 'numballoc-bob', 'on', '>bobs pw', '~*', '&*', '+@all'])
  try {
    const ids = await RedisAllocator.open(unique('acl-user'), {
      redis: `unix://numballoc-bob:${encodeURIComponent('bobs pw')}@localhost${socket}`,
      capacity: 4,
    })
    assert.equal(typeof (await ids.allocate()), 'number')
    await ids.close({ release: true })
  } finally {
    await admin.call(['ACL', 'DELUSER', 'numballoc-bob'])
  }
})

test('a round trip longer than the lease: allocations fail with ERR_LEASE_LOST (the lease ended twice before an answer came), and nothing stays held', async (t) => {
  const slow = await slowProxy(t, server, 150)
  const name = unique('slow-link')
  const ids = await RedisAllocator.open(name, { redis: slow.url, capacity: 4, leaseMs: 100, timeoutMs: 3000 })
  t.after(() => ids.close())
  ids.on('lost', () => {})
  await assert.rejects(ids.allocate(), { code: 'ERR_LEASE_LOST', message: /round trip longer than leaseMs/ })
  await sleep(150) // past the server's end of every lease it took
  const direct = await open(t, name, { capacity: 4 })
  await direct.reclaim()
  assert.equal(await direct.count(), 0)
})
