'use strict'
// Leases (acquire, release, Symbol.dispose, `using`), close({ release: true }), releaseOnExit.
const test = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { ConcurrentBitmap, Lease } = require('..')
const { scratchName, collect, forkFixture } = require('./helpers')

const root = path.join(__dirname, '..')

test('a lease releases once; releasing twice is ERR_LEASE_RELEASED, not a double free', (t) => {
  const pool = ConcurrentBitmap.open(scratchName(t, 'lease'), { capacity: 8 })
  t.after(() => pool.close())
  const lease = pool.acquire()
  assert.ok(lease instanceof Lease)
  assert.equal(pool.isAllocated(lease.value), true)
  assert.equal(lease.released, false)
  lease.release()
  assert.equal(lease.released, true)
  assert.equal(pool.count(), 0)
  const other = pool.acquire() // may reuse the same number: a second release must not free it
  assert.throws(() => lease.release(), { code: 'ERR_LEASE_RELEASED' })
  assert.equal(pool.isAllocated(other.value), true)
  lease[Symbol.dispose]() // after release(): nothing happens
  assert.equal(pool.count(), 1)
  other[Symbol.dispose]()
  assert.equal(pool.count(), 0)
  assert.throws(() => new Lease(), { code: 'ERR_ILLEGAL_CONSTRUCTOR' })
  while (pool.tryAllocate() !== null);
  assert.throws(() => pool.acquire(), { code: 'ERR_NO_FREE_NUMBER' })
})

test('a lease whose number was freed another way never frees it for its next holder', async (t) => {
  const { PortPool } = require('..')
  const name = scratchName(t, 'lease-taken')
  const a = ConcurrentBitmap.open(name, { capacity: 1 })
  const b = ConcurrentBitmap.open(name, { capacity: 1 })
  t.after(() => (a.close(), b.close()))
  const lease = a.acquire()
  b.free(lease.value) // anyone may free any number
  assert.equal(b.allocate(), lease.value)
  assert.throws(() => lease.release(), { code: 'ERR_NOT_ALLOCATED' })
  assert.equal(lease.released, false)
  assert.equal(b.isAllocated(lease.value), true, "b's number was not freed")
  b.free(lease.value)

  const pool = await PortPool.open(scratchName(t, 'lease-taken-ports'), { from: 41000, to: 41000 })
  const other = await PortPool.open(pool.name, { from: 41000, to: 41000 })
  t.after(() => (pool.close(), other.close()))
  const port = await pool.acquire()
  other.release(port.value)
  assert.equal(other.getPortSync(), port.value)
  assert.throws(() => port.release(), { code: 'ERR_NOT_ALLOCATED', message: /port 41000/ })
  assert.equal(other.holderOf(port.value)?.pid, process.pid)
  assert.equal(other.count(), 1)
})

test('a number held as a Lease is not freed by number through its allocator, and a lease whose number the allocator was given again frees nothing', async (t) => {
  const { PortPool } = require('..')
  const name = scratchName(t, 'lease-same')
  const a = ConcurrentBitmap.open(name, { capacity: 4 })
  const b = ConcurrentBitmap.open(name, { capacity: 4 })
  t.after(() => (a.close(), b.close()))
  const lease = a.acquire()
  for (const free of [() => a.free(lease.value), () => a.freeMany([lease.value]), () => a.freeBlock(lease.value, 1)]) {
    assert.throws(free, { code: 'ERR_NOT_ALLOCATED', message: /held as a Lease/ })
  }
  assert.equal(a.isAllocated(lease.value), true)
  // Freed another way, then given to this same allocator again: the lease's number is not its own.
  b.free(lease.value)
  const taken = a.allocateMany(4)
  assert.ok(taken.includes(lease.value))
  assert.throws(() => lease.release(), { code: 'ERR_NOT_ALLOCATED' })
  assert.equal(a.count(), 4)
  a.freeMany(taken) // and a plain free of it is not refused any more
  assert.equal(a.count(), 0)

  const pool = await PortPool.open(scratchName(t, 'lease-same-ports'), { from: 42000, to: 42001 })
  t.after(() => pool.close())
  const port = await pool.acquire()
  assert.throws(() => pool.release(port.value), { code: 'ERR_NOT_ALLOCATED', message: new RegExp(`port ${port.value} is held as a Lease`) })
  port.release()
  assert.equal(pool.count(), 0)
})

test('what a closed handle took stays its own: no other handle of the thread gives it back', (t) => {
  const name = scratchName(t, 'lease-closed-sibling')
  const [a, b, c] = [0, 1, 2].map(() => ConcurrentBitmap.open(name, { capacity: 1 }))
  t.after(() => b.close())
  const lease = a.acquire()
  b.free(lease.value)
  assert.equal(c.allocate(), lease.value)
  c.close() // without release: the number stays held by this thread
  assert.throws(() => lease.release(), { code: 'ERR_NOT_ALLOCATED' })
  a.close({ release: true })
  assert.equal(b.isAllocated(lease.value), true)
  assert.equal(b.tryAllocate(), null)
})

test('a number freed through another handle of the thread is nobody else there: a sibling that took it again can lease and release it', (t) => {
  const name = scratchName(t, 'lease-freed-by-sibling')
  for (const closeFirst of [false, true]) {
    const a = ConcurrentBitmap.open(name, { capacity: 1 })
    const b = ConcurrentBitmap.open(name, { capacity: 1 })
    const n = a.allocate()
    if (closeFirst) a.close() // without release: n stays held, until b frees it
    b.free(n) // anyone may free any number
    const lease = b.acquire()
    assert.equal(lease.value, n)
    lease.release()
    assert.equal(b.count(), 0, `closed first: ${closeFirst}`)
    b.allocate()
    b.close({ release: true })
    assert.equal(a.close({ release: true }), undefined)
    const look = ConcurrentBitmap.open(name, { capacity: 1 })
    assert.equal(look.count(), 0, `released by b, closed first: ${closeFirst}`)
    look.close()
  }
})

test('a lease gone stale (its number freed through another handle and taken again there) no longer blocks a plain free', (t) => {
  const name = scratchName(t, 'lease-stale')
  const a = ConcurrentBitmap.open(name, { capacity: 1 })
  const b = ConcurrentBitmap.open(name, { capacity: 1 })
  t.after(() => (a.close(), b.close()))
  const lease = a.acquire()
  b.free(lease.value)
  assert.equal(b.allocate(), lease.value)
  a.free(lease.value) // anyone may free any number: not refused for a lease that is not live
  assert.equal(b.count(), 0)
  assert.throws(() => lease.release(), { code: 'ERR_NOT_ALLOCATED', message: /not held by this lease/ })
})

test("what a closed handle left of a region goes with the region's last open handle: a new region on its inode starts clean", (t) => {
  const { loadShared, destroyShared } = require('..')
  // A directory on a disk filesystem, which gives a removed file's inode to the next one (tmpfs
  // does not): the sibling lists are kept by device and inode.
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'numballoc-inode-'))
  t.after(() => fs.rmSync(directory, { recursive: true, force: true }))
  const options = { directory, holders: false }
  const first = loadShared('first', 8, options)
  const a = new ConcurrentBitmap(first, 1)
  a.allocate()
  a.close() // without release: what it took stays noted while its object lives
  const inode = fs.statSync(path.join(directory, 'first')).ino
  first.close()
  destroyShared('first', options)
  const second = loadShared('second', 8, options)
  t.after(() => second.close())
  if (fs.statSync(path.join(directory, 'second')).ino !== inode) t.diagnostic('the inode was not reused here')
  const b = new ConcurrentBitmap(second, 1)
  const lease = b.acquire()
  lease.release()
  assert.equal(b.count(), 0)
  b.allocate()
  b.close({ release: true })
  assert.equal(new ConcurrentBitmap(second, 1).count(), 0)
  assert.ok(a) // kept alive to here
})

test('a release that fails leaves the lease unreleased, to be tried again', (t) => {
  const name = scratchName(t, 'lease-closed')
  const bitmap = ConcurrentBitmap.open(name, { capacity: 4 })
  const lease = bitmap.acquire()
  bitmap.close()
  assert.throws(() => lease.release(), { code: 'ERR_REGION_CLOSED' })
  assert.equal(lease.released, false)
  assert.throws(() => lease.release(), { code: 'ERR_REGION_CLOSED' }, 'not ERR_LEASE_RELEASED: nothing was given back')
  const look = ConcurrentBitmap.open(name, { capacity: 4 })
  t.after(() => look.close())
  assert.equal(look.isAllocated(lease.value), true)
})

test('`using port = pool.acquire()` (TypeScript 5.2+) releases at scope exit', (t) => {
  const name = scratchName(t, 'using')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'numballoc-using-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  fs.writeFileSync(
    path.join(dir, 'using.ts'),
    `
    import { ConcurrentBitmap } from ${JSON.stringify(root)}
    const pool = ConcurrentBitmap.open(${JSON.stringify(name)}, { capacity: 8 })
    function serve(): number {
      using port = pool.acquire()
      if (pool.count() !== 1) throw new Error('not held inside the scope')
      return port.value
    }
    const value = serve()
    console.log(JSON.stringify({ value, after: pool.count(), held: pool.isAllocated(value) }))
    pool.close()
  `,
  )
  const tsc = require.resolve('typescript/bin/tsc', { paths: [root] })
  execFileSync(
    process.execPath,
    [
      tsc,
      '--strict',
      '--target',
      'ES2022',
      '--lib',
      'ES2022,ESNext.Disposable',
      '--module',
      'commonjs',
      '--types',
      'node',
      '--typeRoots',
      path.join(root, 'node_modules', '@types'),
      '--outDir',
      dir,
      path.join(dir, 'using.ts'),
    ],
    { cwd: root, stdio: 'inherit' },
  )
  const out = JSON.parse(execFileSync(process.execPath, [path.join(dir, 'using.js')], { encoding: 'utf8' }))
  assert.deepEqual(out, { value: out.value, after: 0, held: false })
})

test('close({ release: true }) gives back what this allocator holds, and only that', (t) => {
  const name = scratchName(t, 'closerelease')
  const a = ConcurrentBitmap.open(name, { capacity: 256 })
  const b = ConcurrentBitmap.open(name, { capacity: 256 })
  t.after(() => b.close())
  const mine = [a.allocate(), a.allocateInRange(200, 210), ...a.allocateMany(5)]
  const block = a.allocateBlock(8, 8)
  a.free(mine.pop())
  const theirs = [b.allocate(), ...b.allocateMany(3)]
  assert.equal(b.count(), mine.length + 8 + theirs.length)
  a.close({ release: true })
  assert.equal(b.count(), theirs.length)
  for (const n of theirs) assert.equal(b.isAllocated(n), true)
  for (const n of [...mine, block]) assert.equal(b.isAllocated(n), false)
  assert.throws(() => a.close({ release: 'yes' }), { code: 'ERR_INVALID_ARG_TYPE' })
})

test('close({ release: true }) leaves a number another handle took since, though this one had it first', (t) => {
  for (const holders of [true, false]) {
    const name = scratchName(t, `closesibling${holders}`)
    const a = ConcurrentBitmap.open(name, { capacity: 8, holders, policy: 'lowest' })
    const b = ConcurrentBitmap.open(name, { capacity: 8, holders, policy: 'lowest' })
    t.after(() => b.close())
    const x = a.allocate()
    b.free(x)
    assert.equal(b.allocate(), x, 'b now holds what a had')
    const y = a.allocate()
    a.close({ release: true })
    assert.equal(b.isAllocated(x), true, `holders: ${holders}: a released the number b holds`)
    assert.equal(b.isAllocated(y), false, 'a released its own')
  }
})

test('releaseOnExit: a process that exits normally gives its numbers back, no reclaim needed', async (t) => {
  for (const releaseOnExit of [true, false]) {
    const name = scratchName(t, `exit${releaseOnExit}`)
    const check = ConcurrentBitmap.open(name, { capacity: 64, holders: false })
    t.after(() => check.close())
    const [{ numbers }] = await collect(forkFixture('exit.js', [name, releaseOnExit]))
    assert.equal(numbers.length, 10)
    // Without holder records nothing could be reclaimed: only the exit hook gives them back.
    assert.equal(check.reclaim(), 0)
    assert.equal(check.count(), releaseOnExit ? 0 : 10, `releaseOnExit: ${releaseOnExit}`)
  }
})
