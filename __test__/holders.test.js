'use strict'
// Who holds a number, in every situation where a live holder used to look dead: pid and time
// namespaces, /proc unreadable or hidden, a reclaimer out of descriptors, a process whose main
// thread exited, a child forked without exec, worker threads. Real namespaces (unshare, as root),
// real processes, real shared memory. A live holder's numbers are never taken; a dead holder's
// come back.
const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const readline = require('node:readline')
const { Worker } = require('node:worker_threads')
const { ConcurrentBitmap } = require('..')
const { scratchName, rustHolder } = require('./helpers')

const fixture = (name) => path.join(__dirname, 'fixtures', name)

/** Why the namespace tests cannot run here, or null if they can. */
function namespacesUnavailable() {
  if (process.getuid() !== 0) return 'unshare needs root'
  const probe = spawnSync('unshare', ['--pid', '--time', '--mount', '--fork', 'true'], { encoding: 'utf8' })
  if (probe.error) return `unshare: ${probe.error.message}`
  if (probe.status !== 0) return `the kernel refused new namespaces: ${probe.stderr.trim()}`
  return null
}
const noNamespaces = namespacesUnavailable()
if (noNamespaces) console.log(`# skipping the namespace tests: ${noNamespaces}`)

/**
 * Starts a process whose lines `next()` reads. When the test ends, pass or fail, its stdin is
 * closed (which ends every holder here, forked children included) and it is killed, so a failed
 * assertion never leaves a holder running.
 */
function start(t, command, args, options = {}) {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'], ...options })
  t.after(() => {
    child.stdin.end()
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  const lines = readline.createInterface({ input: child.stdout })
  const queue = []
  const waiting = []
  let closed = false
  lines.on('line', (line) => (waiting.length ? waiting.shift().resolve(line) : queue.push(line)))
  // Closed when every process that could write has ended (a forked child may outlive `child`).
  lines.on('close', () => {
    closed = true
    for (const { reject } of waiting.splice(0)) reject(new Error(`${command}: output ended before the line`))
  })
  const next = () =>
    new Promise((resolve, reject) => {
      if (queue.length) return resolve(queue.shift())
      if (closed) return reject(new Error(`${command}: output ended before the line`))
      waiting.push({ resolve, reject })
    })
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)))
  return { child, next, exited }
}

/** A Node holder of `count` numbers; under `prefix` (an unshare command line) if given. */
async function nodeHolder(t, name, capacity, count, { prefix = [], directory } = {}) {
  const args = [fixture('holder.js'), name, capacity, count, ...(directory ? [directory] : [])]
  const [command, ...rest] = [...prefix, process.execPath, ...args]
  const holder = start(t, command, rest)
  const first = JSON.parse(await holder.next())
  return { ...holder, ...first }
}

/** Reclaims until `check` holds or 3 s pass: a killed process's locks go as the kernel tears it down. */
async function reclaimUntil(bitmap, check) {
  let reclaimed = 0
  for (let i = 0; i < 300 && !check(); i++) {
    reclaimed += bitmap.reclaim()
    if (!check()) await new Promise((resolve) => setTimeout(resolve, 10))
  }
  return reclaimed
}

/** Asserts that every number of `numbers` is still allocated after reclaim() and a full search. */
function assertStillHeld(bitmap, numbers, why) {
  assert.equal(bitmap.reclaim(), 0, `${why}: reclaim() took a live holder's numbers`)
  const taken = []
  for (let n = bitmap.tryAllocate(); n !== null; n = bitmap.tryAllocate()) taken.push(n)
  assert.deepEqual(
    taken.filter((n) => numbers.includes(n)),
    [],
    `${why}: a live holder's number was handed out`,
  )
  bitmap.freeMany(taken)
  for (const n of numbers) assert.equal(bitmap.isAllocated(n), true, `${why}: ${n} was freed`)
}

for (const mountProc of [true, false]) {
  test(
    `a holder in another pid namespace (${mountProc ? 'with' : 'without'} its own /proc): kept while it runs, back after SIGKILL`,
    { skip: noNamespaces ?? false },
    async (t) => {
      const name = scratchName(t, 'pidns')
      const reclaimer = ConcurrentBitmap.open(name, { capacity: 64 })
      t.after(() => reclaimer.close())
      const prefix = ['unshare', '--pid', '--fork', '--kill-child', ...(mountProc ? ['--mount-proc'] : [])]
      const holder = await nodeHolder(t, name, 64, 5, { prefix })
      assert.equal(holder.pid, 1, 'the holder is pid 1 of its namespace')
      assertStillHeld(reclaimer, holder.numbers, 'pid namespace')
      holder.child.kill('SIGKILL') // --kill-child: the holder dies with unshare
      await holder.exited
      const reclaimed = await reclaimUntil(reclaimer, () => reclaimer.count() === 0)
      assert.equal(reclaimed, 5, "the dead holder's 5 numbers came back")
    },
  )
}

test('a holder in another time namespace (boot time 100000 s ahead) keeps its numbers', { skip: noNamespaces ?? false }, async (t) => {
  const name = scratchName(t, 'timens')
  const reclaimer = ConcurrentBitmap.open(name, { capacity: 64 })
  t.after(() => reclaimer.close())
  const prefix = ['unshare', '--time', '--boottime', '100000', '--monotonic', '100000', '--fork', '--kill-child']
  const holder = await nodeHolder(t, name, 64, 5, { prefix })
  assertStillHeld(reclaimer, holder.numbers, 'time namespace')
  holder.child.stdin.end() // a normal exit gives them back
  await holder.exited
  assert.equal(reclaimer.count(), 0)
})

test('a holder that could not read /proc when it opened the region keeps its numbers', { skip: noNamespaces ?? false }, async (t) => {
  const name = scratchName(t, 'noproc')
  const reclaimer = ConcurrentBitmap.open(name, { capacity: 64 })
  t.after(() => reclaimer.close())
  const script = `mount -t tmpfs tmpfs /proc && exec "$0" "$@"`
  const prefix = ['unshare', '--mount', '--fork', '--kill-child', 'sh', '-c', script]
  const holder = await nodeHolder(t, name, 64, 5, { prefix })
  assertStillHeld(reclaimer, holder.numbers, '/proc hidden from the holder')
  holder.child.kill('SIGKILL')
  await holder.exited
  assert.equal(await reclaimUntil(reclaimer, () => reclaimer.count() === 0), 5)
})

test("a reclaimer out of file descriptors (EMFILE) takes no live holder's number", async (t) => {
  const name = scratchName(t, 'emfile')
  const holder = await nodeHolder(t, name, 32, 5)
  const reclaimer = start(t, process.execPath, [fixture('reclaimer.js'), name, 32, '', 'emfile'])
  const report = JSON.parse(await reclaimer.next())
  assert.ok(report.fdsOpened > 0 && report.stillOut, `the reclaimer ran out of descriptors (${JSON.stringify(report)})`)
  assert.equal(report.reclaimed, 0)
  assert.equal(report.taken.length, 27, "every number but the holder's 5")
  assert.deepEqual(
    report.taken.filter((n) => holder.numbers.includes(n)),
    [],
  )
})

test("with /proc mounted hidepid=2, another user's reclaimer takes no live holder's number", { skip: noNamespaces ?? false }, async (t) => {
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'numballoc-hidepid-'))
  fs.chmodSync(directory, 0o777)
  t.after(() => fs.rmSync(directory, { recursive: true, force: true }))
  const name = 'shared'
  const holder = await nodeHolder(t, name, 32, 5, { directory })
  // Its own mount and pid namespaces, so the hidepid mount cannot touch the machine's /proc.
  const script = `mount -t proc -o hidepid=2 proc /proc && exec setpriv --reuid=65534 --regid=65534 --clear-groups "$0" "$@"`
  const nobody = start(t, 'unshare', [
    '--mount',
    '--pid',
    '--fork',
    '--kill-child',
    'sh',
    '-c',
    script,
    process.execPath,
    fixture('reclaimer.js'),
    name,
    32,
    directory,
  ])
  const report = JSON.parse(await nobody.next())
  assert.equal(report.reclaimed, 0)
  assert.equal(report.taken.length, 27)
  assert.deepEqual(
    report.taken.filter((n) => holder.numbers.includes(n)),
    [],
  )
})

const numbersOf = (line, label) => {
  assert.ok(line.startsWith(`${label} `), line)
  return line
    .slice(label.length + 1)
    .split(',')
    .filter(Boolean)
    .map(Number)
}

test('a process whose main thread exited while another thread runs keeps its numbers', async (t) => {
  const name = scratchName(t, 'leader')
  const reclaimer = ConcurrentBitmap.open(name, { capacity: 64 })
  t.after(() => reclaimer.close())
  const holder = start(t, rustHolder(), [name, 8, 5, 'leader-exits'])
  const numbers = numbersOf(await holder.next(), 'numbers')
  await new Promise((resolve) => setTimeout(resolve, 100)) // the main thread is gone by now
  const state = fs.readFileSync(`/proc/${holder.child.pid}/stat`, 'utf8').split(') ')[1][0]
  assert.equal(state, 'Z', 'the leader shows as a zombie while its other thread runs')
  assertStillHeld(reclaimer, numbers, 'main thread exited')
  holder.child.stdin.end()
  assert.equal(await holder.exited, 0)
  assert.equal(reclaimer.count(), 0, 'its normal exit gave them back')
})

test("a child forked without exec keeps its numbers after its parent exits; with a holder of its own, the parent's come back", async (t) => {
  const exe = rustHolder()
  for (const mode of ['fork', 'fork-own']) {
    const name = scratchName(t, mode)
    const reclaimer = ConcurrentBitmap.open(name, { capacity: 64 })
    t.after(() => reclaimer.close())
    // Under a shell that outlives the parent: Node closes a process's pipes when it exits, and
    // the child, which shares them, would see its stdin end.
    const script = '"$@"; echo "parent exited $?"; exec cat >/dev/null'
    const holder = start(t, 'sh', ['-c', script, 'sh', exe, name, 8, 5, mode])
    const lines = [await holder.next(), await holder.next(), await holder.next()]
    const line = (label) => lines.find((l) => l.startsWith(`${label} `))
    const parent = numbersOf(line('numbers'), 'numbers')
    const child = numbersOf(line('child numbers'), 'child numbers')
    assert.equal(line('parent exited'), 'parent exited 0', 'the parent exited')
    if (mode === 'fork') {
      // One holder for both: nothing comes back while either could still use a number.
      assertStillHeld(reclaimer, [...parent, ...child], "forked child sharing its parent's holder")
    } else {
      // Reclaimed by us, or already by the child when it opened the region again.
      await reclaimUntil(reclaimer, () => reclaimer.count() === 5)
      assert.equal(reclaimer.count(), 5, "the parent's numbers came back, the child's stay")
      assertStillHeld(reclaimer, child, 'forked child with a holder of its own')
    }
    holder.child.stdin.end() // the child shares the pipe: it exits now
    await holder.exited
    const reclaimed = await reclaimUntil(reclaimer, () => reclaimer.count() === 0)
    assert.equal(reclaimer.count(), 0, `${mode}: all came back (${reclaimed} by reclaim)`)
  }
})

/** A worker that opens the region, takes `count` numbers, reports them, and waits to be told to end. */
function worker(name, count) {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads')
    const { ConcurrentBitmap } = require(${JSON.stringify(require.resolve('..'))})
    const bitmap = ConcurrentBitmap.open(workerData.name, { capacity: 64 })
    parentPort.postMessage(bitmap.allocateMany(workerData.count))
    parentPort.on('message', () => process.exit(0))`
  const w = new Worker(code, { eval: true, workerData: { name, count } })
  const numbers = new Promise((resolve, reject) => {
    w.once('message', resolve)
    w.once('error', reject)
  })
  return { w, numbers }
}

test("worker threads are holders of their own: an exited or terminated worker's numbers come back while the process lives", async (t) => {
  const name = scratchName(t, 'workers')
  const main = ConcurrentBitmap.open(name, { capacity: 64 })
  t.after(() => main.close())
  const mine = main.allocateMany(4)

  const exiting = worker(name, 5)
  const exitingNumbers = await exiting.numbers
  assert.notDeepEqual(main.holderOf(exitingNumbers[0]), null)
  assertStillHeld(main, [...mine, ...exitingNumbers], 'a running worker')
  const exited = new Promise((resolve) => exiting.w.once('exit', resolve))
  exiting.w.postMessage('end')
  await exited
  assert.equal(main.count(), 4, 'a worker that exits gives its numbers back')

  const terminated = worker(name, 6)
  const terminatedNumbers = await terminated.numbers
  assert.equal(main.count(), 10)
  await terminated.w.terminate()
  await reclaimUntil(main, () => main.count() === 4)
  assert.equal(main.count(), 4, "a terminated worker's numbers come back")
  for (const n of terminatedNumbers) assert.equal(main.isAllocated(n), false)
  for (const n of mine) assert.equal(main.isAllocated(n), true, 'the main thread keeps its own')
})
