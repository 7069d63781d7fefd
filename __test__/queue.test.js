'use strict'
// ConcurrentQueue's own promises (the conformance suite holds it to what every allocator
// promises): first in, first out, across processes, checked offline from timestamped logs; kinds
// never confused; SIGKILL torture.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { execFileSync, spawn } = require('node:child_process')
const { ConcurrentQueue, ConcurrentBitmap, PortPool, loadShared, inspectShared, MAX_QUEUE_CAPACITY } = require('..')
const { scratchName, forkFixture, waitFor, rustHolder, torture } = require('./helpers')

const root = path.join(__dirname, '..')

test('a new queue hands out 0, 1, 2, ... and then numbers in the order they were freed, across handles', (t) => {
  const name = scratchName(t, 'queue-order')
  const a = ConcurrentQueue.open(name, { capacity: 6 })
  const b = ConcurrentQueue.open(name, { capacity: 6 })
  t.after(() => [a, b].forEach((q) => q.close()))
  assert.deepEqual(
    Array.from({ length: 6 }, (_, i) => (i % 2 ? a : b).allocate()),
    [0, 1, 2, 3, 4, 5],
  )
  for (const n of [4, 1, 5]) b.free(n)
  assert.deepEqual(a.waiting(), [4, 1, 5])
  assert.deepEqual(a.waiting(2), [4, 1])
  assert.deepEqual([a.allocate(), b.allocate()], [4, 1])
  assert.equal(a.count(), 5)
  assert.equal(Object.prototype.toString.call(a), '[object ConcurrentQueue]')
  assert.throws(() => a.waiting(-1), { code: 'ERR_OUT_OF_RANGE' })
  assert.throws(() => ConcurrentQueue.prototype.waiting.call(ConcurrentBitmap.open(scratchName(t, 'b'), { capacity: 8 })), {
    code: 'ERR_INVALID_THIS',
  })
})

test('a bitmap region is never taken for a queue, nor the reverse: ERR_KIND_MISMATCH naming both', async (t) => {
  const queueName = scratchName(t, 'kind-q')
  const bitmapName = scratchName(t, 'kind-b')
  const queue = ConcurrentQueue.open(queueName, { capacity: 16 })
  const bitmap = ConcurrentBitmap.open(bitmapName, { capacity: 16 })
  t.after(() => [queue, bitmap].forEach((a) => a.close()))
  const mismatch = (existing, requested) => ({ code: 'ERR_KIND_MISMATCH', message: new RegExp(`holds a ${existing}, not the ${requested}`) })
  assert.throws(() => ConcurrentBitmap.open(queueName), mismatch('queue', 'bitmap'))
  assert.throws(() => ConcurrentBitmap.open(queueName, { capacity: 16 }), mismatch('queue', 'bitmap'))
  assert.throws(() => loadShared(queueName, 2), mismatch('queue', 'bitmap'))
  assert.throws(() => ConcurrentQueue.open(bitmapName, { capacity: 16 }), mismatch('bitmap', 'queue'))
  const mem = loadShared(queueName)
  t.after(() => mem.close())
  assert.deepEqual([mem.kind, mem.capacity, mem.size], ['queue', 16, 16])
  assert.throws(() => mem.blocks(), mismatch('queue', 'bitmap'))
  assert.throws(() => new ConcurrentBitmap(mem), mismatch('queue', 'bitmap'))
  const over = new ConcurrentQueue(mem)
  assert.equal(over.allocate(), 0)
  const bitmapMem = loadShared(bitmapName)
  t.after(() => bitmapMem.close())
  assert.throws(() => new ConcurrentQueue(bitmapMem), mismatch('bitmap', 'queue'))
  assert.throws(() => ConcurrentQueue.open(scratchName(t, 'big'), { capacity: MAX_QUEUE_CAPACITY + 1 }), { code: 'ERR_OUT_OF_RANGE' })
  assert.throws(() => ConcurrentQueue.open(scratchName(t, 'none')), { code: 'ERR_INVALID_ARG_TYPE' })
  assert.equal(inspectShared(queueName).kind, 'queue')
  // A queue region is no port pool, as a bitmap that is not one is not.
  await assert.rejects(PortPool.open(queueName, { from: 40000, to: 40015 }), { code: 'ERR_POOL_MISMATCH' })
})

test('a queue whose words disagree (copied while in use, or damaged) never hangs a call: each ends, each number once', (t) => {
  const dir = fs.mkdtempSync('/tmp/numballoc-queue-damaged-')
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  const name = 'damaged'
  ConcurrentQueue.open(name, { capacity: 4, directory: dir }).close()
  // Number 0's state word (docs/FORMAT.md: the states follow the 192-byte header and the 128-byte
  // control section) says it waits under ticket 100, though the tail is at 4.
  const fd = fs.openSync(path.join(dir, name), 'r+')
  const word = Buffer.alloc(8)
  word.writeBigUInt64LE(100n)
  fs.writeSync(fd, word, 0, 8, 192 + 128)
  fs.closeSync(fd)
  // In a child with a time limit, so a regression fails this test instead of hanging the run.
  const program = `
    const { ConcurrentQueue } = require(${JSON.stringify(root)})
    const q = ConcurrentQueue.open('${name}', { capacity: 4, directory: ${JSON.stringify(dir)} })
    const got = []
    for (let n = q.tryAllocate(); n !== null; n = q.tryAllocate()) got.push(n)
    console.log(JSON.stringify(got.sort()))`
  const out = execFileSync(process.execPath, ['-e', program], { encoding: 'utf8', timeout: 20_000 })
  assert.deepEqual(JSON.parse(out), [0, 1, 2, 3])
})

/**
 * Checks first-in first-out over logs of many processes: for any two frees where free(a)
 * returned before free(b) was called, the allocation that next handed out b must not return
 * before the one that next handed out a is called (a stayed free meanwhile, behind b), unless an
 * allocation call that began earlier was still running all along (before format v8 an allocate
 * that stalled after taking its place at the head held back the number it reached; now it claims
 * before the head moves, so the test below expects no such bypass). Returns the violations (at
 * most 10) and how many bypasses a stalled call would explain.
 */
function orderViolations(logs) {
  const byNumber = new Map()
  const calls = [] // every allocate call, for the exception
  for (const log of logs) {
    for (let i = 0; i < log.length; i += 4) {
      const [kind, n, start, end] = log.slice(i, i + 4)
      if (!byNumber.has(n)) byNumber.set(n, { allocs: [], frees: [] })
      byNumber.get(n)[kind === 0 ? 'allocs' : 'frees'].push({ start, end })
      if (kind === 0) calls.push({ start, end })
    }
  }
  calls.sort((x, y) => x.start - y.start)
  // runningUntil[i]: the latest end among the first i + 1 calls by start.
  const runningUntil = []
  for (const call of calls) runningUntil.push(Math.max(call.end, runningUntil.at(-1) ?? -Infinity))
  /** Whether some allocate call began before `from` and was still running at `to`. */
  const stalledAcross = (from, to) => {
    let [lo, hi] = [0, calls.length] // the calls that began before `from`: [0, lo)
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (calls[mid].start < from) lo = mid + 1
      else hi = mid
    }
    return lo > 0 && runningUntil[lo - 1] > to
  }
  const pairs = []
  for (const [n, { allocs, frees }] of byNumber) {
    allocs.sort((x, y) => x.end - y.end)
    frees.sort((x, y) => x.start - y.start)
    // A number's k-th free is followed by its (k+1)-th allocation (the first came from the new queue).
    frees.forEach((free, k) => pairs.push({ n, free, next: allocs[k + 1] ?? { start: Infinity, end: Infinity } }))
  }
  const byFreeEnd = [...pairs].sort((x, y) => x.free.end - y.free.end)
  const byFreeStart = [...pairs].sort((x, y) => x.free.start - y.free.start)
  const violations = []
  let excused = 0
  let added = 0
  let latest = null // among frees that returned before the current b's free began: the latest next allocation
  for (const b of byFreeStart) {
    while (added < byFreeEnd.length && byFreeEnd[added].free.end < b.free.start) {
      const a = byFreeEnd[added++]
      if (latest === null || a.next.start > latest.next.start) latest = a
    }
    if (latest === null || latest.next.start <= b.next.end) continue
    // The worst a for this b: if a stalled call explains it, it explains every other a too.
    if (stalledAcross(b.next.end, latest.next.start)) excused++
    else if (violations.length < 10) violations.push({ a: latest, b })
  }
  return { violations, excused, pairs: pairs.length }
}

test('first in, first out across 4 processes, checked offline from timestamped logs', async (t) => {
  const name = scratchName(t, 'queue-fifo')
  const base = process.hrtime.bigint()
  const dir = fs.mkdtempSync('/tmp/numballoc-order-')
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  const files = [0, 1, 2, 3].map((i) => path.join(dir, `${i}.log`))
  const children = files.map((file) => forkFixture('order.js', [name, 16, 30000, base, file]))
  await Promise.all(children.map((child) => waitFor(child, (m) => m === 'ready')))
  const done = children.map((child) => waitFor(child, (m) => m === 'done'))
  for (const child of children) child.send('go')
  await Promise.all(done)
  const logs = files.map((file) => {
    const bytes = fs.readFileSync(file)
    return Array.from(new Float64Array(bytes.buffer, bytes.byteOffset, bytes.length / 8))
  })
  const { violations, excused, pairs } = orderViolations(logs)
  assert.ok(pairs > 40000, `${pairs} frees logged`)
  t.diagnostic(`${pairs} frees; ${excused} later frees came back first while an earlier allocate call stalled`)
  assert.deepEqual(violations, [], 'a number freed later came back before one freed earlier that stayed free')
  assert.equal(excused, 0, 'an allocate holds no number back (it claims before the head moves)')
})

test('the order checker flags a later free handed out first, unless an earlier allocate call was stalled across it', () => {
  // [kind, n, start, end]: 0 and 1 from the new queue; 0 freed, then 1; 1 handed out first.
  const run = [0, 0, 0, 1, 0, 1, 2, 3, 1, 0, 4, 5, 1, 1, 6, 7, 0, 1, 8, 9, 0, 0, 10, 11]
  const { violations, excused } = orderViolations([run])
  assert.deepEqual(
    violations.map(({ a, b }) => [a.n, b.n]),
    [[0, 1]],
  )
  assert.equal(excused, 0)
  // Another process's allocate call, begun at 3 and still running at 12, explains it (it stalled
  // holding 0's place); one that ended before 10 does not.
  assert.deepEqual(orderViolations([run, [0, 2, 3, 12]]), { violations: [], excused: 1, pairs: 2 })
  assert.equal(orderViolations([run, [0, 2, 3, 9.5]]).violations.length, 1)
})

test(
  'queue torture: 1,000 SIGKILLs of Node and Rust holders at random moments; no number held twice, none lost, nobody blocked',
  { timeout: 300_000 },
  async (t) => {
    const name = scratchName(t, 'queue-torture')
    const capacity = 32
    const holder = rustHolder()
    // Rust processes churning as short-lived holders (a slot taken, numbers taken and freed, the
    // slot given back), killed mid-operation far more often than a Node process can be; they keep
    // witness files too, and report a number a live process holds.
    const churner = (witnessDir, overlaps) => {
      const child = spawn(holder, [name, capacity, 4, 'queue-churn'], {
        stdio: ['ignore', 'pipe', 'inherit'],
        env: { ...process.env, NUMBALLOC_WITNESS: witnessDir },
      })
      child.stdout.on('data', (chunk) => {
        for (const line of String(chunk).split('\n')) if (line.startsWith('overlap')) overlaps.push(line)
      })
      return child
    }
    const { check, live, finish } = await torture(t, {
      name,
      kind: 'queue',
      capacity,
      kills: 1000,
      workers: 2,
      churner,
      churnerShare: 0.9,
      pauseMs: () => Math.random() * 4,
    })
    // Every other number comes back, each once, stranded ones too.
    const rest = []
    for (let n = check.tryAllocate(); n !== null; n = check.tryAllocate()) rest.push(n)
    assert.deepEqual(
      [...rest, ...live.map(({ n }) => n)].sort((x, y) => x - y),
      Array.from({ length: capacity }, (_, i) => i),
      'every number accounted for, once',
    )
    for (const n of rest) check.free(n)
    await finish()
    assert.equal(check.count(), 0)
  },
)
