'use strict'
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { loadShared, destroyShared, inspectShared, listShared, reclaimShared, ConcurrentBitmap, ConcurrentQueue, SharedMemory } = require('..')
const { scratchName } = require('./helpers')

test('the Go README example, translated', (t) => {
  const name = scratchName(t, 'readme')
  // shared memory can be safely used by multiple processes
  const size = 256 // bytes, can allocate 256 * 8 numbers
  const mem = loadShared(name, size)
  t.after(() => mem.close())

  const allocator = new ConcurrentBitmap(mem, 0)
  const number = allocator.allocate()
  // number is guaranteed to be unique across all processes sharing the same memory region
  assert.ok(Number.isInteger(number) && number >= 0 && number < 2048)
  assert.equal(allocator.max, 2048)
  assert.ok(allocator.isAllocated(number))
  assert.ok(fs.existsSync(`/dev/shm/${name}`), 'the region is a POSIX shared-memory object')
})

test('exhaustion: every number once, then ERR_NO_FREE_NUMBER, then reuse after free', (t) => {
  const bitmap = ConcurrentBitmap.open(scratchName(t, 'exhaust'), { capacity: 1000 })
  t.after(() => bitmap.close())
  const seen = new Set()
  for (let i = 0; i < 1000; i++) seen.add(bitmap.allocate())
  assert.equal(seen.size, 1000)
  assert.deepEqual(
    [...seen].sort((a, b) => a - b),
    Array.from({ length: 1000 }, (_, i) => i),
  )
  assert.equal(bitmap.count(), 1000)
  assert.throws(() => bitmap.allocate(), { code: 'ERR_NO_FREE_NUMBER', message: 'could not allocate a free number' })
  assert.equal(bitmap.tryAllocate(), null)
  bitmap.free(617)
  assert.equal(bitmap.isAllocated(617), false)
  assert.equal(bitmap.allocate(), 617)
  assert.equal(bitmap.tryAllocate(), null)
})

test('max follows Go: 0 or absent is size*8, otherwise min(size*8, max)', (t) => {
  const mem = loadShared(scratchName(t, 'max'), 4)
  t.after(() => mem.close())
  assert.equal(new ConcurrentBitmap(mem).max, 32)
  assert.equal(new ConcurrentBitmap(mem, 0).max, 32)
  assert.equal(new ConcurrentBitmap(mem, 5).max, 5)
  assert.equal(new ConcurrentBitmap(mem, 1000).max, 32)
  const five = new ConcurrentBitmap(mem, 5)
  for (let i = 0; i < 5; i++) assert.ok(five.allocate() < 5)
  assert.equal(five.tryAllocate(), null)
  assert.equal(new ConcurrentBitmap(mem).count(), 5)
})

test('SharedMemory: name, size, blocks() is a snapshot copy in Go layout', (t) => {
  const name = scratchName(t, 'blocks')
  const mem = loadShared(name, 12)
  t.after(() => mem.close())
  assert.equal(mem.name, name)
  assert.equal(mem.size, 12)
  assert.equal(String(mem), '[object SharedMemory]')
  const bitmap = new ConcurrentBitmap(mem)
  while (bitmap.tryAllocate() !== null);
  for (let n = 0; n < 96; n++) if (n !== 33 && n !== 95) bitmap.free(n)
  const blocks = mem.blocks()
  assert.ok(blocks instanceof Uint32Array)
  assert.deepEqual([...blocks], [0, 1 << 1, 2 ** 31])
  blocks[0] = 0xffffffff
  assert.equal(bitmap.isAllocated(0), false, 'writing the copy changes nothing')
  assert.equal(bitmap.count(), 2)
})

test('SharedMemory cannot be constructed directly', () => {
  assert.throws(() => new SharedMemory(), { name: 'TypeError', code: 'ERR_ILLEGAL_CONSTRUCTOR' })
})

test('two handles in one process share the numbers', (t) => {
  const name = scratchName(t, 'handles')
  const a = ConcurrentBitmap.open(name, { capacity: 64 })
  const b = ConcurrentBitmap.open(name, { capacity: 64 })
  t.after(() => (a.close(), b.close()))
  const all = []
  for (let i = 0; i < 32; i++) all.push(a.allocate(), b.allocate())
  assert.equal(new Set(all).size, 64)
  assert.equal(a.tryAllocate(), null)
  b.free(all[0])
  assert.equal(a.allocate(), all[0])
})

test('close: idempotent; any later use is ERR_REGION_CLOSED', (t) => {
  const name = scratchName(t, 'closed')
  const mem = loadShared(name, 8)
  const viaMem = new ConcurrentBitmap(mem)
  const n = viaMem.allocate()
  mem.close()
  mem.close()
  for (const use of [
    () => viaMem.allocate(),
    () => viaMem.tryAllocate(),
    () => viaMem.free(n),
    () => viaMem.isAllocated(n),
    () => viaMem.count(),
    () => mem.blocks(),
    () => new ConcurrentBitmap(mem),
  ]) {
    assert.throws(use, { code: 'ERR_REGION_CLOSED' })
  }

  const owned = ConcurrentBitmap.open(name, { capacity: 64 })
  owned.close()
  owned.close()
  assert.throws(() => owned.allocate(), { code: 'ERR_REGION_CLOSED' })
  const other = ConcurrentBitmap.open(name, { capacity: 64 })
  t.after(() => other.close())
  assert.ok(other.isAllocated(n), 'closing keeps numbers allocated')
  assert.equal(other.count(), 1)
})

test('close() gives back the region descriptor and mapping at once, not when the garbage collector runs', async (t) => {
  const { PortPool } = require('..')
  const name = scratchName(t, 'fdleak')
  const descriptors = () => fs.readdirSync('/proc/self/fd').length
  const mappings = () =>
    fs
      .readFileSync('/proc/self/maps', 'utf8')
      .split('\n')
      .filter((line) => line.endsWith(`/${name}`)).length
  const before = descriptors()
  // More rounds than descriptors left over would show: each leaked round kept one of each.
  for (let round = 0; round < 300; round++) {
    const bitmap = ConcurrentBitmap.open(name, { capacity: 64 })
    bitmap.free(bitmap.allocate())
    bitmap.close()
    assert.throws(() => bitmap.allocate(), { code: 'ERR_REGION_CLOSED' })
    const mem = loadShared(name)
    new ConcurrentBitmap(mem).close()
    mem.close()
  }
  destroyShared(name)
  for (let round = 0; round < 100; round++) {
    const queue = ConcurrentQueue.open(name, { capacity: 8 })
    queue.free(queue.allocate())
    queue.close()
    assert.throws(() => queue.free(0), { code: 'ERR_REGION_CLOSED' })
  }
  destroyShared(name)
  for (let round = 0; round < 100; round++) (await PortPool.open(name, { from: 40000, to: 40007 })).close()
  assert.ok(descriptors() - before < 5, `descriptors: ${before} before, ${descriptors()} after 600 opens and closes`)
  assert.equal(mappings(), 0)
})

test('closing an allocator does not close a SharedMemory it did not open', (t) => {
  const mem = loadShared(scratchName(t, 'notowned'), 8)
  t.after(() => mem.close())
  const a = new ConcurrentBitmap(mem)
  a.close()
  assert.throws(() => a.allocate(), { code: 'ERR_REGION_CLOSED' })
  assert.equal(new ConcurrentBitmap(mem).allocate() >= 0, true)
})

test('destroyShared while open: handles keep working, the next open is fresh', (t) => {
  const name = scratchName(t, 'destroy')
  const old = ConcurrentBitmap.open(name, { capacity: 64 })
  t.after(() => old.close())
  const n = old.allocate()
  assert.equal(destroyShared(name), true)
  assert.equal(destroyShared(name), false)
  assert.equal(fs.existsSync(`/dev/shm/${name}`), false)
  assert.ok(old.isAllocated(n))
  old.free(n)
  old.allocate()
  const fresh = ConcurrentBitmap.open(name, { capacity: 64 })
  t.after(() => fresh.close())
  assert.equal(fresh.count(), 0)
  assert.equal(old.count(), 1)
})

test('a region can live in a file in a chosen directory', (t) => {
  const directory = fs.mkdtempSync('/tmp/numballoc-dir-')
  t.after(() => fs.rmSync(directory, { recursive: true, force: true }))
  const bitmap = ConcurrentBitmap.open('in-a-file', { capacity: 100, directory })
  const n = bitmap.allocate()
  bitmap.close()
  assert.equal(fs.statSync(`${directory}/in-a-file`).isFile(), true)
  const again = ConcurrentBitmap.open('in-a-file', { capacity: 100, directory })
  assert.ok(again.isAllocated(n), 'the file keeps the numbers')
  again.close()
  assert.equal(destroyShared('in-a-file', { directory }), true)
  assert.equal(fs.existsSync(`${directory}/in-a-file`), false)
})

test('handles that are never closed are released when garbage-collected', async (t) => {
  const { fork } = require('node:child_process')
  const path = require('node:path')
  const { collect } = require('./helpers')
  const name = scratchName(t, 'gc')
  const child = fork(path.join(__dirname, 'fixtures', 'collect.js'), [name], { execArgv: ['--expose-gc'] })
  const [report] = await collect(child)
  assert.equal(report.before, 200, 'every open handle maps the region')
  // The thread's holder slot stays, with one mapping, while it holds the numbers it took.
  assert.equal(report.after, 1, 'collected handles unmapped it, all but the holder slot')
})

test('an existing region opens by name alone, whatever its size, and keeps its tag', (t) => {
  const name = scratchName(t, 'existing')
  const created = loadShared(name, 37, { tag: 0xabcn })
  t.after(() => created.close())
  assert.equal(created.tag, 0xabcn)
  const opened = loadShared(name)
  t.after(() => opened.close())
  assert.deepEqual([opened.size, opened.tag], [37, 0xabcn])
  const ids = ConcurrentBitmap.open(name)
  t.after(() => ids.close())
  assert.equal(ids.max, 296)
  const n = new ConcurrentBitmap(created).allocate()
  assert.ok(ids.isAllocated(n), 'both handles see one region')
  assert.equal(loadShared(name, 37).tag, 0xabcn, 'an opener that asks no tag accepts any')
  assert.throws(
    () => loadShared(name, 37, { tag: 0xabdn }),
    (e) => e.code === 'ERR_TAG_MISMATCH' && /0xabc/.test(e.message),
  )
  assert.equal(loadShared(scratchName(t, 'untagged'), 8).tag, 0n)
})

test('inspectShared reports counts, holders and cells; listShared finds the region', (t) => {
  const name = scratchName(t, 'inspect')
  const ids = ConcurrentBitmap.open(name, { capacity: 256, policy: 'lowest' })
  t.after(() => ids.close())
  ids.allocateMany(70)
  ids.allocateInRange(200, 255)
  const report = inspectShared(name, { cells: 4 })
  assert.deepEqual(
    { capacity: report.capacity, inUse: report.inUse, heldByDead: report.heldByDead, cells: report.cells, cellSize: report.cellSize },
    { capacity: 256, inUse: 71, heldByDead: 0, cells: [64, 6, 0, 1], cellSize: 64 },
  )
  assert.deepEqual(report.holders, [{ pid: process.pid, alive: true, count: 71 }])
  assert.equal(report.path, `/${name}`)
  // The report is what index.d.ts declares, field for field (the binding's structs implement
  // the declarations there, which are the only ones published).
  const declared = (type) => {
    const body = fs
      .readFileSync(require('node:path').join(__dirname, '..', 'index.d.ts'), 'utf8')
      .match(new RegExp(`export interface ${type} \\{([\\s\\S]*?)\\n\\}`))[1]
    return [...body.matchAll(/^ {2}(\w+)(\??):/gm)].map((m) => m[1] + m[2]).sort()
  }
  // Optional fields (`queue?`, a queue region's) are absent from a bitmap's report.
  assert.deepEqual(
    Object.keys(report).sort(),
    declared('RegionReport').filter((field) => !field.endsWith('?')),
  )
  assert.equal(report.kind, 'bitmap')
  const queueName = scratchName(t, 'inspect-queue')
  const queue = ConcurrentQueue.open(queueName, { capacity: 8 })
  t.after(() => queue.close())
  for (let i = 0; i < 5; i++) queue.allocate()
  queue.free(2)
  const queueReport = inspectShared(queueName, { cells: 8 })
  assert.deepEqual(
    Object.keys(queueReport).sort(),
    declared('RegionReport').map((field) => field.replace('?', '')),
  )
  assert.deepEqual(Object.keys(queueReport.queue).sort(), declared('QueueReport'))
  assert.deepEqual(
    { kind: queueReport.kind, inUse: queueReport.inUse, cells: queueReport.cells, queue: queueReport.queue },
    { kind: 'queue', inUse: 4, cells: [1, 1, 0, 1, 1, 0, 0, 0], queue: { waiting: 4, next: [5, 6, 7, 2], stranded: 0 } },
  )
  assert.deepEqual(queueReport.holders, [{ pid: process.pid, alive: true, count: 4 }])
  assert.deepEqual(Object.keys(report.holders[0]).sort(), declared('HolderReport'))
  assert.ok(listShared().includes(name))
  assert.equal(ids.count(), 71, 'inspecting changed nothing')
  assert.throws(() => inspectShared(name, { cells: 0 }), { code: 'ERR_OUT_OF_RANGE' })
  assert.throws(() => inspectShared(scratchName(t, 'absent')), { code: 'ENOENT' })
})

test('a region records the capacity it was created for: another capacity is ERR_SIZE_MISMATCH, inspect shows it', (t) => {
  const name = scratchName(t, 'capacity')
  const three = ConcurrentBitmap.open(name, { capacity: 3 })
  t.after(() => three.close())
  assert.equal(three.max, 3)
  assert.throws(
    () => ConcurrentBitmap.open(name, { capacity: 5 }),
    (e) => e.code === 'ERR_SIZE_MISMATCH' && /capacity 3/.test(e.message) && /5/.test(e.message),
  )
  const byName = ConcurrentBitmap.open(name)
  t.after(() => byName.close())
  assert.equal(byName.max, 3, 'opened by name alone: the capacity it was created for')
  const mem = loadShared(name, 1)
  t.after(() => mem.close())
  assert.deepEqual([mem.size, mem.capacity], [1, 3])
  assert.equal(new ConcurrentBitmap(mem).max, 3)
  assert.equal(inspectShared(name).capacity, 3)
  assert.deepEqual([three.allocate(), three.allocate(), three.allocate()].sort(), [0, 1, 2])
  assert.equal(three.tryAllocate(), null)
})

test('reclaimShared reports what came back; 0 when nobody died, and for a region without holders', async (t) => {
  const { forkFixture, waitFor } = require('./helpers')
  const name = scratchName(t, 'reclaimshared')
  const agent = forkFixture('agent.js', [name, 64, 'any'])
  await waitFor(agent, (m) => m === 'ready')
  const reply = waitFor(agent, (m) => m.id === 1)
  agent.send({ id: 1, method: 'allocate', times: 7 })
  await reply
  assert.equal(reclaimShared(name), 0, 'its holder lives')
  await new Promise((resolve) => {
    agent.once('exit', resolve)
    agent.kill('SIGKILL')
  })
  assert.equal(reclaimShared(name), 7)
  assert.equal(reclaimShared(name), 0)
  const plain = scratchName(t, 'plain')
  loadShared(plain, 8, { holders: false }).close()
  assert.equal(reclaimShared(plain), 0)
  assert.throws(() => reclaimShared(scratchName(t, 'absent')), { code: 'ENOENT' })
})

test('a subclass opens instances of itself; a subclass constructor that throws is an error from open', (t) => {
  class Ids extends ConcurrentBitmap {
    next() {
      return this.allocate()
    }
  }
  const name = scratchName(t, 'subclass')
  const ids = Ids.open(name, { capacity: 8 })
  t.after(() => ids.close())
  assert.ok(ids instanceof Ids && ids instanceof ConcurrentBitmap)
  assert.equal(ids.next(), 0)

  class Broken extends ConcurrentBitmap {
    constructor(...args) {
      super(...args)
      throw new Error('subclass says no')
    }
  }
  assert.throws(() => Broken.open(name), /subclass says no/)
  assert.equal(ids.next(), 1)
  // Called on something that is no ConcurrentBitmap class: a coded error, not the engine's.
  assert.throws(() => ConcurrentBitmap.open.call(class Other {}, name), { code: 'ERR_INVALID_THIS' })
  assert.throws(() => ConcurrentBitmap.open.call(Object, name), { code: 'ERR_INVALID_THIS' })
  assert.equal(ids.next(), 2, 'the region is still the same and usable')
})
