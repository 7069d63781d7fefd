'use strict'
// The conformance suite every allocator kind and backend passes (fixtures/kinds.js lists them):
// exhaustion, double free, bad input, leases, uniqueness across processes and threads, and
// numbers back after SIGKILL. Written in the async form (every call awaited, every error a
// rejection), so the shared-memory kinds and RedisAllocator run the very same code. What one
// kind alone promises is tested in its own file (policies.test.js, queue.test.js, redis.test.js).
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { spawn } = require('node:child_process')
const path = require('node:path')
const { KINDS, openKind, deathNoticedAfterMs, badOptions, badName, exists } = require('./fixtures/kinds.js')
const { scratchName, forkFixture, waitFor, kill9 } = require('./helpers')
const { startRedis } = require('./redis-server.js')

// One redis-server for the file; every test uses allocators of its own names.
let server
test.before(async () => {
  server = await startRedis(null)
  process.env.NUMBALLOC_TEST_REDIS = server.url
})
test.after(() => server?.cleanup())

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Ends a lease as `using` / `await using` would. */
async function dispose(lease) {
  if (typeof lease[Symbol.asyncDispose] === 'function') await lease[Symbol.asyncDispose]()
  else lease[Symbol.dispose]()
}

/** Runs fixtures/holder.js: a process holding `count` numbers until killed or its stdin closes. */
async function holding(kind, name, capacity, count) {
  const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'holder.js'), name, capacity, count, '', kind], {
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  let out = ''
  for await (const chunk of child.stdout) {
    out += chunk
    if (out.includes('\n')) break
  }
  return { child, ...JSON.parse(out) }
}

for (const kind of KINDS) {
  test(`${kind}: every number once, then ERR_NO_FREE_NUMBER; double frees and bad input are coded errors`, async (t) => {
    const a = await openKind(kind, scratchName(t, `conf-${kind}`), 50)
    t.after(() => a.close())
    assert.equal(a.max, 50)
    const got = []
    for (let i = 0; i < 50; i++) got.push(await a.allocate())
    assert.deepEqual(
      [...got].sort((x, y) => x - y),
      Array.from({ length: 50 }, (_, i) => i),
    )
    await assert.rejects(async () => a.allocate(), { code: 'ERR_NO_FREE_NUMBER', message: 'could not allocate a free number' })
    assert.equal(await a.tryAllocate(), null)
    assert.equal(await a.count(), 50)
    await a.free(7)
    assert.equal(await a.isAllocated(7), false)
    assert.equal(await a.isAllocated(8), true)
    await assert.rejects(async () => a.free(7), { code: 'ERR_NOT_ALLOCATED' })
    for (const bad of [-1, 50, 1.5, NaN, Infinity, 2 ** 53]) {
      await assert.rejects(async () => a.free(bad), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }, String(bad))
      await assert.rejects(async () => a.isAllocated(bad), { code: 'ERR_OUT_OF_RANGE' }, String(bad))
      await assert.rejects(async () => a.holderOf(bad), { code: 'ERR_OUT_OF_RANGE' }, String(bad))
    }
    for (const bad of ['3', null, undefined, {}, 3n, Symbol('n')]) {
      await assert.rejects(async () => a.free(bad), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }, String(bad))
    }
    await assert.rejects(async () => a.close({ release: 'yes' }), { code: 'ERR_INVALID_ARG_TYPE' })
    await assert.rejects(async () => a.allocate.call({}), { code: 'ERR_INVALID_THIS' })
    assert.equal(await a.allocate(), 7, 'the one free number')
    assert.equal((await a.holderOf(7)).pid, process.pid)
  })

  test(`${kind}: bad arguments to open are coded errors and create nothing`, async (t) => {
    const name = scratchName(t, `conf-open-${kind}`)
    for (const capacity of [0, -1, 1.5, NaN]) {
      await assert.rejects(async () => openKind(kind, name, capacity), { code: 'ERR_OUT_OF_RANGE' }, String(capacity))
    }
    for (const [options, code] of badOptions(kind)) {
      await assert.rejects(async () => openKind(kind, name, 8, options), { code }, JSON.stringify(options))
    }
    await assert.rejects(async () => openKind(kind, badName(kind), 8), { code: 'ERR_INVALID_NAME' })
    assert.equal(await exists(kind, name), false)
  })

  test(`${kind}: leases release once, by release() or at the end of a using scope`, async (t) => {
    const a = await openKind(kind, scratchName(t, `conf-lease-${kind}`), 2)
    t.after(() => a.close())
    const lease = await a.acquire()
    assert.equal(await a.isAllocated(lease.value), true)
    await lease.release()
    assert.equal(lease.released, true)
    await assert.rejects(async () => lease.release(), { code: 'ERR_LEASE_RELEASED' })
    assert.equal(await a.count(), 0)
    {
      const first = await a.acquire()
      const second = await a.acquire()
      await assert.rejects(async () => a.acquire(), { code: 'ERR_NO_FREE_NUMBER' })
      await dispose(first)
      await dispose(second)
      await dispose(second) // idempotent
    }
    assert.equal(await a.count(), 0)
  })

  test(`${kind}: close({ release: true }) gives back what the handle holds, and a closed handle is ERR_REGION_CLOSED`, async (t) => {
    const name = scratchName(t, `conf-close-${kind}`)
    const a = await openKind(kind, name, 8)
    const b = await openKind(kind, name, 8)
    t.after(() => b.close())
    await a.allocate()
    await a.allocate()
    await b.allocate()
    await a.close({ release: true })
    assert.equal(await b.count(), 1)
    await assert.rejects(async () => a.allocate(), { code: 'ERR_REGION_CLOSED' })
    await a.close() // idempotent
  })

  test(`${kind}: 4 processes churning: no number is ever held by two at once (witness files)`, async (t) => {
    const name = scratchName(t, `conf-churn-${kind}`)
    const witnessDir = fs.mkdtempSync('/tmp/numballoc-conformance-')
    t.after(() => fs.rmSync(witnessDir, { recursive: true, force: true }))
    const children = Array.from({ length: 4 }, () => forkFixture('churn.js', [name, witnessDir, 12, 20000, kind]))
    await Promise.all(children.map((child) => waitFor(child, (m) => m === 'ready')))
    const reports = children.map((child) => waitFor(child, (m) => m.taken !== undefined))
    for (const child of children) child.send('go')
    const results = await Promise.all(reports)
    for (const { overlaps } of results) assert.deepEqual(overlaps, [])
    // Each took part. Not a share of the numbers: 12 numbers for four holders of up to 4 each,
    // and a process the machine runs less (a loaded CI) gets far fewer (609 of 20,000 seen).
    assert.ok(
      results.every(({ taken }) => taken > 100),
      `every process got numbers: ${results.map((r) => r.taken)}`,
    )
    assert.deepEqual(fs.readdirSync(witnessDir), [])
    const check = await openKind(kind, name, 12)
    t.after(() => check.close())
    assert.equal(await check.count(), 0, 'every number back')
  })

  test(`${kind}: 4 worker threads churning: no number is ever held by two at once (a shared witness)`, async (t) => {
    const { Worker } = require('node:worker_threads')
    const name = scratchName(t, `conf-threads-${kind}`)
    const capacity = 12
    // One Int32 per number, shared by the threads: a thread that holds n has set it to 1 with a
    // compare-and-swap from 0; a failed swap means two holders at once.
    const witness = new Int32Array(new SharedArrayBuffer(4 * capacity))
    const code = `
      const { workerData, parentPort } = require('node:worker_threads')
      const { openKind } = require(${JSON.stringify(path.join(__dirname, 'fixtures', 'kinds.js'))})
      const { kind, name, capacity, witness } = workerData
      ;(async () => {
        const allocator = await openKind(kind, name, capacity)
        let taken = 0, overlaps = 0
        const held = []
        for (let round = 0; round < 20000; round++) {
          const n = await allocator.tryAllocate()
          if (n !== null) {
            taken++
            if (Atomics.compareExchange(witness, n, 0, 1) !== 0) overlaps++
            held.push(n)
          }
          if (held.length > 2 || (round % 3 === 0 && held.length > 0)) {
            const m = held.shift()
            Atomics.store(witness, m, 0)
            await allocator.free(m)
          }
        }
        for (const m of held) { Atomics.store(witness, m, 0); await allocator.free(m) }
        await allocator.close()
        parentPort.postMessage({ taken, overlaps })
      })()`
    const results = await Promise.all(
      Array.from(
        { length: 4 },
        () =>
          new Promise((resolve, reject) => {
            const worker = new Worker(code, { eval: true, workerData: { kind, name, capacity, witness } })
            worker.once('message', resolve)
            worker.once('error', reject)
          }),
      ),
    )
    assert.deepEqual(
      results.map((r) => r.overlaps),
      [0, 0, 0, 0],
    )
    assert.ok(
      results.every((r) => r.taken > 1000),
      `every thread got numbers: ${results.map((r) => r.taken)}`,
    )
    const check = await openKind(kind, name, capacity)
    t.after(() => check.close())
    assert.equal(await check.count(), 0, 'every number back')
  })

  test(`${kind}: a holder killed with SIGKILL: reclaim() gives back exactly its numbers; a full allocator reclaims by itself`, async (t) => {
    const name = scratchName(t, `conf-kill-${kind}`)
    const own = await openKind(kind, name, 30)
    t.after(() => own.close())
    const mine = []
    for (let i = 0; i < 20; i++) mine.push(await own.allocate())
    const victim = await holding(kind, name, 30, 10)
    assert.equal(victim.numbers.length, 10)
    assert.equal((await own.holderOf(victim.numbers[0])).pid, victim.child.pid)
    assert.equal(await kill9(victim.child), 'SIGKILL')
    assert.equal(await own.count(), 30, 'a killed process keeps its numbers until reclaimed')
    if (deathNoticedAfterMs(kind) > 0) {
      assert.equal(await own.reclaim(), 0, 'not before its lease ends')
      await sleep(deathNoticedAfterMs(kind))
    }
    assert.equal(await own.reclaim(), 10)
    assert.equal(await own.reclaim(), 0)
    for (const n of victim.numbers) assert.equal(await own.isAllocated(n), false)
    for (const n of mine) assert.equal(await own.isAllocated(n), true)
    const again = await holding(kind, name, 30, 10)
    await kill9(again.child)
    await sleep(deathNoticedAfterMs(kind))
    const back = []
    for (let i = 0; i < 10; i++) back.push(await own.allocate())
    assert.deepEqual(
      back.sort((x, y) => x - y),
      [...again.numbers].sort((x, y) => x - y),
      'a full allocator reclaimed the dead holder before saying full',
    )
  })
}
