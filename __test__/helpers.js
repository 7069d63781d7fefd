'use strict'
// Shared by the Node tests: unique region names that are destroyed even when a test fails, and
// child processes that report over IPC.
const { fork } = require('node:child_process')
const net = require('node:net')
const path = require('node:path')
const { destroyShared } = require('..')

let sequence = 0

/** A region name no other test, process or run uses; destroyed when the test ends, pass or fail. */
function scratchName(t, tag) {
  const name = `numballoc-test-${tag}-${process.pid}-${sequence++}-${Math.random().toString(36).slice(2, 8)}`
  t.after(() => {
    try {
      destroyShared(name)
    } catch {
      // A test left something there that is not a region (destroyShared refuses those).
      require('node:fs').rmSync(`/dev/shm/${name}`, { recursive: true, force: true })
    }
  })
  return name
}

/** Every message a child sends, in order, and its exit; rejects if it fails. */
function collect(child) {
  const messages = []
  child.on('message', (m) => messages.push(m))
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('exit', (code, signal) => {
      if (code === 0) resolve(messages)
      else reject(new Error(`child ${child.pid} exited with ${signal ?? code}: ${JSON.stringify(messages.slice(-3))}`))
    })
  })
}

/** Forks a fixture script with arguments. */
function forkFixture(script, args) {
  return fork(path.join(__dirname, 'fixtures', script), args.map(String), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
}

/** Resolves with the first message of `child` that satisfies `predicate`. */
function waitFor(child, predicate) {
  return new Promise((resolve, reject) => {
    const onExit = (code) => reject(new Error(`child exited (${code}) before the expected message`))
    const onMessage = (m) => {
      if (predicate(m)) {
        child.off('message', onMessage)
        child.off('exit', onExit)
        resolve(m)
      }
    }
    child.on('message', onMessage)
    child.once('exit', onExit)
  })
}

/**
 * Every message of `child`, kept from now on, and `next(predicate)`: the first kept message that
 * satisfies it and was not taken yet, waiting for it if it has not come. Unlike `waitFor` called
 * again and again, no message is missed: several that arrive together are all kept.
 */
function messages(child) {
  const kept = []
  const waiting = []
  child.on('message', (m) => {
    const index = waiting.findIndex((w) => w.predicate(m))
    if (index >= 0) waiting.splice(index, 1)[0].resolve(m)
    else kept.push(m)
  })
  return {
    next(predicate) {
      const index = kept.findIndex(predicate)
      if (index >= 0) return Promise.resolve(kept.splice(index, 1)[0])
      return new Promise((resolve) => waiting.push({ predicate, resolve }))
    },
  }
}

/** Whether `port` can be listened on right now on every address (a plain check, not numballoc's). */
function portIsFree(port) {
  return new Promise((resolve) => {
    const server = net.createServer()
    server.once('error', () => resolve(false))
    server.listen({ port, exclusive: true }, () => server.close(() => resolve(true)))
  })
}

/**
 * The first port of `count` consecutive ports that are all free now, searched from a random
 * start in 20000-29999 (below Linux's ephemeral ports, which outgoing connections take).
 */
async function freePortRange(count) {
  for (let attempt = 0; attempt < 100; attempt++) {
    const from = 20000 + Math.floor(Math.random() * (10000 - count))
    let free = true
    for (let port = from; free && port < from + count; port++) free = await portIsFree(port)
    if (free) return from
  }
  throw new Error(`no ${count} consecutive free ports found`)
}

/** Listens on `port` as a program outside any pool would; resolves with the server. */
function occupy(port) {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(port, () => resolve(server))
  })
}

/** SIGKILLs `child` (unless it has ended) and resolves with the signal it ended by. */
function kill9(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.signalCode)
  return new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve(signal))
    child.kill('SIGKILL')
  })
}

/** Builds the Rust example `holder` (crates/core/examples/holder.rs) once and returns its path. */
function rustHolder() {
  if (!rustHolder.path) {
    const { execFileSync } = require('node:child_process')
    const root = path.join(__dirname, '..')
    execFileSync('cargo', ['build', '--quiet', '-p', 'numballoc-core', '--example', 'holder'], { cwd: root, stdio: 'inherit' })
    const targetDir = JSON.parse(execFileSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], { cwd: root })).target_directory
    rustHolder.path = path.join(targetDir, 'debug', 'examples', 'holder')
  }
  return rustHolder.path
}

/**
 * SIGKILL torture on the region `name` (an allocator of `kind`, `capacity` numbers): `workers`
 * fixtures/torture.js processes churn with witness files, beside the processes `churner(witnessDir,
 * overlaps)` starts (two of them), and `kills` times one of them is killed at a random moment
 * (a churner with probability `churnerShare`, after `pauseMs()`) and replaced. Then it checks that
 * no two live processes ever held a number at once, and that after `reclaim()` exactly what the
 * live workers hold is held, by them. Resolves with `check` (an allocator over the region), `live`
 * (the numbers the workers still hold, with their pids) and `finish()`, which lets the workers
 * give their numbers back and exit.
 */
async function torture(t, { name, kind, capacity, kills, workers: count, churner, churnerShare, pauseMs }) {
  const assert = require('node:assert/strict')
  const fs = require('node:fs')
  const { openKind } = require('./fixtures/kinds.js')
  const witnessDir = fs.mkdtempSync('/tmp/numballoc-torture-')
  t.after(() => fs.rmSync(witnessDir, { recursive: true, force: true }))
  const overlaps = []
  const start = async () => {
    const child = forkFixture('torture.js', [name, witnessDir, capacity, kind])
    child.on('message', (m) => m.overlaps && overlaps.push(...m.overlaps))
    child.on('error', () => {})
    await waitFor(child, (m) => m === 'ready')
    child.send('go')
    return child
  }
  const workers = await Promise.all(Array.from({ length: count }, start))
  const churners = [churner(witnessDir, overlaps), churner(witnessDir, overlaps)]
  t.after(() => [...workers, ...churners].forEach((child) => child.exitCode === null && child.kill('SIGKILL')))
  let done = 0
  while (done < kills && overlaps.length === 0) {
    await new Promise((resolve) => setTimeout(resolve, pauseMs()))
    if (Math.random() < churnerShare) {
      const index = Math.floor(Math.random() * churners.length)
      await kill9(churners[index])
      churners[index] = churner(witnessDir, overlaps)
    } else {
      const index = Math.floor(Math.random() * workers.length)
      await kill9(workers[index])
      workers[index] = await start()
    }
    done++
  }
  for (const child of churners) await kill9(child)
  const reports = await Promise.all(
    workers.map((child) => {
      const reply = waitFor(child, (m) => m.holding !== undefined)
      child.send('stop')
      return reply
    }),
  )
  for (const report of reports) overlaps.push(...report.overlaps)
  assert.deepEqual(overlaps, [], 'a number was held by two live processes at once')
  assert.equal(done, kills)

  const check = openKind(kind, name, capacity)
  t.after(() => check.close())
  check.reclaim()
  const live = reports.flatMap((report, i) => report.holding.map((n) => ({ n, pid: workers[i].pid })))
  assert.equal(check.count(), live.length, 'in use after reclaim = exactly what live workers hold')
  for (const { n, pid } of live) assert.deepEqual(check.holderOf(n), { pid })
  assert.equal(new Set(live.map(({ n }) => n)).size, live.length)
  const finish = () =>
    Promise.all(
      workers.map(
        (child) =>
          new Promise((resolve) => {
            child.once('exit', resolve)
            child.send('exit')
          }),
      ),
    )
  return { check, live, finish }
}

module.exports = {
  scratchName,
  collect,
  forkFixture,
  waitFor,
  messages,
  portIsFree,
  freePortRange,
  occupy,
  kill9,
  rustHolder,
  torture,
}
