'use strict'
// The hot path (src/hot.rs, lib/hot.js): allocate() and free(n) of every allocator of a thread
// through two shared native functions and a buffer naming the allocator, or their fallback.
const test = require('node:test')
const assert = require('node:assert/strict')
const { spawnSync } = require('node:child_process')
const { Worker } = require('node:worker_threads')
const { ConcurrentBitmap, ConcurrentQueue } = require('..')
const native = require('../lib/native.js')
const { slowHotPath } = require('../lib/hot.js')
const { scratchName } = require('./helpers')

test('allocators of both kinds and on several regions, used in turn on one thread, each hand out their own numbers', (t) => {
  const bitmapName = scratchName(t, 'hot-bitmap')
  const first = ConcurrentBitmap.open(bitmapName, { capacity: 64 })
  const second = ConcurrentBitmap.open(bitmapName) // the same region through another handle
  const other = ConcurrentBitmap.open(scratchName(t, 'hot-other'), { capacity: 2 })
  const queue = ConcurrentQueue.open(scratchName(t, 'hot-queue'), { capacity: 4 })
  t.after(() => [first, second, other, queue].forEach((a) => a.close()))
  // The first allocator to make 64 calls gets the thread's bound hot path: this one, so that
  // what follows mixes it with the shared one.
  for (let i = 0; i < 100; i++) first.free(first.allocate())

  const shared = new Set()
  const queued = []
  for (let i = 0; i < 4; i++) {
    shared.add(first.allocate())
    queued.push(queue.allocate())
    shared.add(second.allocate())
  }
  assert.equal(shared.size, 8, 'two handles on one region never get the same number')
  assert.equal(first.count(), 8)
  assert.deepEqual(queued, [0, 1, 2, 3], 'a new queue hands out 0, 1, 2, ... whatever else is called between')
  assert.equal(queue.tryAllocate(), null)
  assert.deepEqual([other.allocate(), other.allocate(), other.tryAllocate()], [0, 1, null])

  queue.free(2)
  queue.free(0)
  assert.deepEqual([queue.allocate(), queue.allocate()], [2, 0], 'first freed, first out')
  // A number of one region is freed in that region only.
  const [n] = shared
  assert.equal(other.isAllocated(n) && n < 2, n < 2)
  second.free(n) // anyone may free a number of their region
  assert.equal(first.isAllocated(n), false)
  assert.throws(() => first.free(n), { code: 'ERR_NOT_ALLOCATED' })
  assert.equal(other.count(), 2, 'the other region is untouched')

  // Each call names its own allocator, whichever was called last.
  const k = first.allocate()
  assert.equal(other.tryAllocate(), null)
  first.free(k)
  assert.equal(first.isAllocated(k), false)
  assert.equal(other.count(), 2)
  assert.equal(queue.tryAllocate(), null)
  second.free([...shared][1])
  assert.equal(first.count(), 6)

  other.close()
  assert.throws(() => other.allocate(), { code: 'ERR_REGION_CLOSED' })
  assert.throws(() => other.free(0), { code: 'ERR_REGION_CLOSED' })
  assert.ok(Number.isInteger(first.allocate()), 'the others still work')
  assert.equal(queue.tryAllocate(), null)
})

test('worker threads: each thread has its own hot path, and every thread gets distinct numbers', async (t) => {
  const name = scratchName(t, 'hot-workers')
  const main = ConcurrentBitmap.open(name, { capacity: 256 })
  t.after(() => main.close())
  const mine = Array.from({ length: 40 }, () => main.allocate())
  // Each worker holds its numbers until every thread has taken its own.
  const release = new Int32Array(new SharedArrayBuffer(4))
  const code = `
    const { parentPort, workerData } = require('node:worker_threads')
    const { ConcurrentBitmap, ConcurrentQueue } = require(${JSON.stringify(require.resolve('..'))})
    const bitmap = ConcurrentBitmap.open(workerData.name)
    const queue = ConcurrentQueue.open(workerData.queue, { capacity: 8 })
    const numbers = []
    for (let i = 0; i < 40; i++) {
      numbers.push(bitmap.allocate())
      queue.free(queue.allocate()) // another allocator of the thread in between
    }
    parentPort.postMessage(numbers)
    Atomics.wait(workerData.release, 0, 0)
    // Ends holding them: a thread that ends gives back what it held.
  `
  const workers = [0, 1, 2].map((i) => new Worker(code, { eval: true, workerData: { name, queue: scratchName(t, `hot-wq${i}`), release } }))
  const ended = workers.map((worker) => new Promise((resolve, reject) => worker.on('error', reject).on('exit', resolve)))
  const results = await Promise.all(workers.map((worker) => new Promise((resolve) => worker.once('message', resolve))))
  const all = [...results.flat(), ...mine]
  assert.equal(all.length, 160)
  assert.equal(new Set(all).size, 160, 'no number went to two threads')
  assert.equal(main.count(), 160)
  Atomics.store(release, 0, 1)
  Atomics.notify(release, 0)
  assert.deepEqual(await Promise.all(ended), [0, 0, 0])
  assert.equal(main.count(), 40, "the workers' numbers came back when they ended")
})

/** A bitmap of `capacity` numbers and a queue of 2 through the native layer, as lib/regions.js makes them. */
function nativeAllocators(t) {
  const { defaultMode } = native.limits()
  const open = (tag, kind, size, capacity) => {
    const memory = native.regionOpen(scratchName(t, tag), kind, size, capacity, true, defaultMode, null, true, null, false)
    t.after(() => native.regionClose(memory))
    return memory
  }
  const memory = open('hot-native-bitmap', 'bitmap', 1, null)
  const bitmap = native.bitmapNew(memory, 3, 'any', true)
  const queue = native.queueNew(open('hot-native-queue', 'queue', null, 2), true)
  return { memory, bitmap, queue }
}

for (const [label, make] of [
  ['the native hot path', () => native.hotPath()],
  ['its fallback for runtimes without external ArrayBuffers (lib/hot.js)', () => slowHotPath(native)],
]) {
  test(`${label}: numbers, -1 when none is free, typed errors, and hostile buffer contents`, (t) => {
    const [allocate, free, io] = make()
    assert.ok(io instanceof Float64Array && io.length === 2)
    const { memory, bitmap, queue } = nativeAllocators(t)
    const take = (id) => {
      io[1] = id
      allocate()
      return io[0]
    }
    const give = (id, n) => {
      io[0] = n
      io[1] = id
      free()
    }
    assert.deepEqual([take(bitmap), take(bitmap), take(bitmap), take(bitmap)].sort(), [-1, 0, 1, 2])
    assert.deepEqual([take(queue), take(queue), take(queue)], [0, 1, -1])
    give(queue, 1)
    give(bitmap, 1)
    assert.deepEqual([take(queue), take(bitmap)], [1, 1])
    give(queue, 1)
    assert.throws(() => give(queue, 1), { code: 'ERR_NOT_ALLOCATED' })
    assert.equal(take(queue), 1)
    for (const n of [1.5, -1, NaN, Infinity, 2 ** 64, 3]) {
      assert.throws(() => give(bitmap, n), { code: 'ERR_OUT_OF_RANGE' }, `free(${n})`)
    }
    for (const id of [memory, 2 ** 32, 2 ** 32 + bitmap, 1e12, -1, NaN, bitmap + 0.5]) {
      assert.throws(() => take(id), { code: 'ERR_INVALID_ARG_TYPE' }, `handle ${id}`)
      assert.throws(() => give(id, 0), { code: 'ERR_INVALID_ARG_TYPE' }, `handle ${id}`)
    }
    native.allocatorClose(bitmap, false, false)
    assert.throws(() => take(bitmap), { code: 'ERR_REGION_CLOSED' })
    assert.throws(() => give(bitmap, 0), { code: 'ERR_REGION_CLOSED' })
    assert.deepEqual([take(queue)], [-1], 'the queue is still open, and full')
  })
}

for (const [label, make] of [
  ['a native hot path bound to one allocator', (id) => native.hotPath(id)],
  ['its fallback', (id) => slowHotPath(native, id)],
]) {
  test(`${label}: works on that allocator whatever io[1] says`, (t) => {
    const { bitmap, queue } = nativeAllocators(t)
    const [allocate, free, io] = make(bitmap)
    io[1] = queue
    const taken = [0, 1, 2, 3].map(() => {
      allocate()
      return io[0]
    })
    assert.deepEqual(taken.sort(), [-1, 0, 1, 2])
    assert.equal(native.allocatorCount(bitmap), 3)
    assert.equal(native.allocatorCount(queue), 0)
    io[0] = 1
    free()
    assert.equal(native.allocatorIsAllocated(bitmap, 1), false)
    assert.throws(() => free(), { code: 'ERR_NOT_ALLOCATED' })
    io[0] = 2.5
    assert.throws(() => free(), { code: 'ERR_OUT_OF_RANGE' })
    native.allocatorClose(bitmap, false, false)
    assert.throws(() => allocate(), { code: 'ERR_REGION_CLOSED' })
    assert.throws(() => free(), { code: 'ERR_REGION_CLOSED' })
  })
}

test('a hot path is bound to an allocator only', (t) => {
  const { memory } = nativeAllocators(t)
  for (const id of [memory, 2 ** 31]) {
    assert.throws(() => native.hotPath(id), { code: 'ERR_INVALID_ARG_TYPE' }, `handle ${id}`)
  }
})

test('closing the allocator a hot path is bound to gives back its region at once; the bound pair then says closed', (t) => {
  // A process of its own: the first allocator of a thread to make 64 calls gets the bound pair.
  const script = `
    const assert = require('node:assert/strict')
    const fs = require('node:fs')
    const { ConcurrentBitmap } = require(${JSON.stringify(require.resolve('..'))})
    const name = process.argv[1]
    const mapped = () => fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((line) => line.endsWith('/' + name)).length
    const bitmap = ConcurrentBitmap.open(name, { capacity: 8 })
    for (let i = 0; i < 200; i++) bitmap.free(bitmap.allocate())
    assert.equal(mapped(), 1)
    const n = bitmap.allocate()
    bitmap.close({ release: true })
    assert.equal(mapped(), 0, 'the bound pair kept the region mapped')
    assert.throws(() => bitmap.allocate(), { code: 'ERR_REGION_CLOSED' })
    assert.throws(() => bitmap.free(n), { code: 'ERR_REGION_CLOSED' })
    require(${JSON.stringify(require.resolve('..'))}).destroyShared(name)
    console.log('ok')
  `
  const result = spawnSync(process.execPath, ['-e', script, scratchName(t, 'hot-bound-close')], { encoding: 'utf8', timeout: 60000 })
  assert.equal(result.stderr, '')
  assert.equal(result.stdout, 'ok\n')
})

test('the hot path survives a transfer of its buffer, and hot paths made and dropped are collected', (t) => {
  const script = `
    const assert = require('node:assert/strict')
    const native = require(${JSON.stringify(require.resolve('../lib/native.js'))})
    const { defaultMode } = native.limits()
    const name = process.argv[1]
    const memory = native.regionOpen(name, 'bitmap', 8, null, true, defaultMode, null, true, null, false)
    const bitmap = native.bitmapNew(memory, 0, 'any', true)
    let [allocate, free, io] = native.hotPath()
    io[1] = bitmap
    // Node copies a buffer over an addon's memory rather than detach it; were it detached, the
    // functions would still work on that memory, where JavaScript no longer sees it.
    const copy = structuredClone(io.buffer, { transfer: [io.buffer] })
    assert.ok(io.length === 2 || io.length === 0)
    for (let i = 0; i < 5; i++) globalThis.gc()
    allocate()
    assert.equal(native.allocatorCount(bitmap), 1)
    free()
    assert.equal(native.allocatorCount(bitmap), 0)
    assert.equal(copy.byteLength, 16)
    // Many hot paths made and dropped: their functions and buffers are collected.
    for (let i = 0; i < 10000; i++) native.hotPath()
    allocate = free = io = undefined
    for (let i = 0; i < 5; i++) globalThis.gc()
    const [a, f, fresh] = native.hotPath()
    fresh[1] = bitmap
    a()
    assert.equal(fresh[0], 0)
    f()
    native.allocatorClose(bitmap, true, true)
    native.regionDestroy(name, null)
    console.log('ok')
  `
  const result = spawnSync(process.execPath, ['--expose-gc', '-e', script, scratchName(t, 'hot-gc')], { encoding: 'utf8', timeout: 60000 })
  assert.equal(result.stderr, '')
  assert.equal(result.stdout, 'ok\n')
  assert.equal(result.status, 0)
})

test('user code run while an error is made (a setter of Object.prototype) may use other allocators: no crash, nothing mixed up', (t) => {
  const script = `
    const assert = require('node:assert/strict')
    const { ConcurrentBitmap, ConcurrentQueue, destroyShared } = require(${JSON.stringify(require.resolve('..'))})
    const native = require(${JSON.stringify(require.resolve('../lib/native.js'))})
    const names = process.argv.slice(1)
    const a = ConcurrentBitmap.open(names[0], { capacity: 8 })
    const b = ConcurrentQueue.open(names[1], { capacity: 8 })
    const taken = []
    Object.defineProperty(Object.prototype, 'code', {
      configurable: true,
      set() {
        taken.push(b.allocate())
        // Drops a handle of the thread's table while the native call that makes this error runs.
        const doomed = native.regionOpen(names[2], 'bitmap', 1, null, true, native.limits().defaultMode, null, true, null, false)
        native.releaseHandle(doomed)
      },
    })
    const n = a.allocate()
    a.free(n)
    assert.throws(() => a.free(n)) // the error's code goes to the setter
    assert.throws(() => a.free(n))
    delete Object.prototype.code
    assert.deepEqual(taken, [0, 1])
    assert.equal(a.count(), 0)
    assert.equal(b.count(), 2)
    assert.equal(a.allocate(), n)
    assert.equal(b.allocate(), 2)
    a.close()
    b.close()
    names.forEach((name) => destroyShared(name))
    console.log('ok')
  `
  const names = ['a', 'b', 'c'].map((tag) => scratchName(t, `hot-setter-${tag}`))
  const result = spawnSync(process.execPath, ['-e', script, ...names], { encoding: 'utf8', timeout: 60000 })
  assert.equal(result.stderr, '')
  assert.equal(result.stdout, 'ok\n')
  assert.equal(result.status, 0)
})
