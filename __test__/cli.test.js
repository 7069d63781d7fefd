'use strict'
// The numballoc command, run as a user runs it: a process, its output and its exit status.
const test = require('node:test')
const assert = require('node:assert')
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { ConcurrentBitmap, ConcurrentQueue, PortPool, listShared, loadShared } = require('..')
const { scratchName, forkFixture, waitFor, freePortRange } = require('./helpers')

const BIN = path.join(__dirname, '..', 'bin', 'numballoc.js')

function run(...args) {
  const { status, stdout, stderr } = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' })
  return { status, stdout, stderr }
}

/**
 * Runs the command so that file permissions apply to it: as root, which reads every file through
 * its DAC capabilities, with those capabilities dropped (setpriv, util-linux).
 */
function runWithoutOverride(...args) {
  if (process.getuid() !== 0) return run(...args)
  const drop = ['--bounding-set', '-dac_override,-dac_read_search']
  const { status, stdout, stderr } = spawnSync('setpriv', [...drop, process.execPath, BIN, ...args], { encoding: 'utf8' })
  return { status, stdout, stderr }
}

function json(...args) {
  const result = run(...args, '--json')
  assert.strictEqual(result.status, 0, result.stderr)
  return JSON.parse(result.stdout)
}

/** A region where a killed child held `dead` numbers and this process holds `alive`. */
async function regionWithDeadHolder(t, capacity, dead, alive) {
  const name = scratchName(t, 'cli')
  const ids = ConcurrentBitmap.open(name, { capacity, policy: 'lowest' })
  t.after(() => ids.close())
  const child = forkFixture('agent.js', [name, capacity, 'lowest'])
  const exited = new Promise((resolve) => child.once('exit', resolve))
  await waitFor(child, (m) => m === 'ready')
  child.send({ id: 1, method: 'allocate', times: dead })
  const { results } = await waitFor(child, (m) => m?.id === 1)
  assert.strictEqual(results.length, dead)
  child.kill('SIGKILL')
  await exited
  for (let i = 0; i < alive; i++) ids.allocate()
  return { name, ids, deadPid: child.pid }
}

test('inspect shows counts, holders alive and dead, and an occupancy picture', async (t) => {
  const { name, deadPid } = await regionWithDeadHolder(t, 1024, 100, 28)
  const out = run('inspect', name)
  assert.strictEqual(out.status, 0, out.stderr)
  assert.match(out.stdout, new RegExp(`region +${name}`))
  assert.match(out.stdout, /capacity +1024 numbers/)
  assert.match(out.stdout, /in use +128 \(12\.5%\)/)
  assert.match(out.stdout, /2 processes: 1 alive, 1 dead holding 100/)
  assert.match(out.stdout, new RegExp(`${deadPid} +100 +dead`))
  assert.match(out.stdout, new RegExp(`${process.pid} +28 +alive`))
  // 256 cells of 4 numbers in 4 rows of 64: the first 32 cells full, the rest empty.
  const rows = out.stdout.split('\n').filter((line) => /^ +\d+ [·░▒▓█]+$/.test(line))
  assert.deepStrictEqual(
    rows.map((r) => r.trim().split(' ')[0]),
    ['0', '256', '512', '768'],
  )
  assert.strictEqual(rows[0].trim().split(' ')[1], '█'.repeat(32) + '·'.repeat(32))
  assert.strictEqual(rows[3].trim().split(' ')[1], '·'.repeat(64))

  const report = json('inspect', name, '--cells', '8')
  assert.strictEqual(report.inUse, 128)
  assert.strictEqual(report.heldByDead, 100)
  assert.deepStrictEqual(report.cells, [128, 0, 0, 0, 0, 0, 0, 0])
  assert.deepStrictEqual(
    report.holders.map((h) => [h.pid, h.alive, h.count]),
    [
      [deadPid, false, 100],
      [process.pid, true, 28],
    ],
  )
})

test('inspect shades partly full cells and labels a port pool by port', async (t) => {
  const name = scratchName(t, 'clipool')
  const from = await freePortRange(16)
  const pool = await PortPool.open(name, { from, to: from + 15 })
  t.after(() => pool.close())
  for (const port of [from, from + 1, from + 2, from + 3, from + 4, from + 8]) await pool.getPort({ port })
  const out = run('inspect', name, '--cells', '4')
  assert.strictEqual(out.status, 0, out.stderr)
  assert.match(out.stdout, new RegExp(`ports ${from}-${from + 15} \\(a port pool\\)`))
  assert.match(out.stdout, /capacity +16 ports/)
  // Cells of 4 ports: full, 1 of 4, 1 of 4, empty.
  assert.match(out.stdout, new RegExp(`\\n +${from} █░░·\\n`))
})

test('list shows every region with its counts; reclaim frees what the dead held', async (t) => {
  const { name } = await regionWithDeadHolder(t, 256, 10, 3)
  const row = json('list').find((r) => r.name === name)
  assert.deepStrictEqual(
    { capacity: row.capacity, inUse: row.inUse, alive: row.holdersAlive, dead: row.holdersDead, heldByDead: row.heldByDead },
    { capacity: 256, inUse: 13, alive: 1, dead: 1, heldByDead: 10 },
  )
  const text = run('list')
  assert.match(text.stdout, /^NAME +HOLDS +CAPACITY +IN USE +ALIVE +DEAD +HELD BY DEAD$/m)
  assert.match(text.stdout, new RegExp(`^${name} +numbers 0-255 +256 +13 +1 +1 +10$`, 'm'))

  const reclaimed = run('reclaim', name)
  assert.strictEqual(reclaimed.status, 0, reclaimed.stderr)
  assert.match(reclaimed.stdout, /reclaimed 10 numbers held by dead processes/)
  assert.deepStrictEqual(json('reclaim', name), { name, reclaimed: 0, tracksHolders: true })
  const after = json('inspect', name)
  assert.deepStrictEqual([after.inUse, after.heldByDead], [3, 0])
})

test('list and inspect show a queue: its kind, what is held, and what waits, next out first', (t) => {
  const name = scratchName(t, 'cli-queue')
  const queue = ConcurrentQueue.open(name, { capacity: 40 })
  t.after(() => queue.close())
  for (let i = 0; i < 30; i++) queue.allocate()
  for (const n of [7, 3, 22]) queue.free(n)
  const text = run('inspect', name, '--cells', '40').stdout
  assert.match(text, /^holds {5}queue of numbers 0-39$/m)
  assert.match(text, /a first-in first-out queue, with holder records/)
  assert.match(text, /^in use {4}27 \(67\.5%\)$/m)
  assert.match(text, /^waiting {3}13, next out first: 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 7, 3, 22$/m)
  const report = json('inspect', name)
  assert.deepStrictEqual(
    [report.allocator, report.inUse, report.waiting, report.queue],
    ['queue', 27, 13, { waiting: 13, next: [30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 7, 3, 22], stranded: 0 }],
  )
  const row = json('list').find((r) => r.name === name)
  assert.deepStrictEqual([row.kind, row.allocator, row.inUse, row.waiting], ['queue of numbers 0-39', 'queue', 27, 13])
})

test('destroy removes a region and refuses what is not one', (t) => {
  const name = scratchName(t, 'clidestroy')
  loadShared(name, 8).close()
  assert.deepStrictEqual(json('destroy', name), { name, destroyed: true })
  assert.ok(!listShared().includes(name))
  const again = run('destroy', name)
  assert.deepStrictEqual([again.status, again.stderr], [1, `numballoc: no region named '${name}'\n`])

  const foreign = scratchName(t, 'foreign')
  fs.writeFileSync(path.join('/dev/shm', foreign), 'x'.repeat(200))
  const refused = run('destroy', foreign)
  assert.strictEqual(refused.status, 1)
  assert.match(refused.stderr, /^numballoc: .*not a compatible numballoc region.*\n$/)
  assert.ok(fs.existsSync(path.join('/dev/shm', foreign)), 'a foreign object is left alone')
})

test('errors are one line with a non-zero exit, also as JSON', (t) => {
  const missing = scratchName(t, 'missing')
  for (const command of ['inspect', 'reclaim', 'destroy']) {
    const out = run(command, missing)
    assert.deepStrictEqual([out.status, out.stdout, out.stderr], [1, '', `numballoc: no region named '${missing}'\n`], command)
  }
  const asJson = run('inspect', missing, '--json')
  assert.strictEqual(asJson.status, 1)
  assert.deepStrictEqual(JSON.parse(asJson.stderr), { error: { code: 'ENOENT', message: `no region named '${missing}'` } })

  const usage = [
    run('frobnicate'),
    run('inspect'),
    run('list', 'extra'),
    run('inspect', 'x', '--bogus'),
    run('inspect', 'x', '--cells', 'many'),
    // What Number() would take, and a name or capacity the library refuses: the command line is wrong.
    ...['1e3', '0x10', ' 5', '5.0'].map((cells) => run('inspect', 'x', '--cells', cells)),
    run('inspect', ''),
    run('inspect', 'bad/name'),
    run('run', '--id', `X=${scratchName(t, 'zero')}:0`, '--', 'true'),
    run('list', '--redis', 'ftp://host'),
  ]
  for (const out of usage) {
    assert.strictEqual(out.status, 2, out.stderr)
    assert.strictEqual(out.stderr.split('\n').length, 2, `one line: ${out.stderr}`)
    assert.match(out.stderr, /^numballoc: /)
  }
  assert.match(run('inspect', 'bad/name').stderr, /^numballoc: invalid region name/)
})

test('permission denied is one clear line, and list leaves such regions out', (t) => {
  const name = scratchName(t, 'locked')
  loadShared(name, 8).close()
  fs.chmodSync(path.join('/dev/shm', name), 0o000)
  for (const command of ['inspect', 'reclaim', 'destroy']) {
    const out = runWithoutOverride(command, name)
    assert.deepStrictEqual([out.status, out.stderr], [1, `numballoc: permission denied: region '${name}' (/${name})\n`], command)
  }
  assert.ok(listShared().includes(name), 'destroy did not remove it')
  const listed = runWithoutOverride('list', '--json')
  assert.strictEqual(listed.status, 0, listed.stderr)
  assert.ok(!JSON.parse(listed.stdout).some((r) => r.name === name))
})

test('regions kept in a directory are listed and inspected with --dir', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'numballoc-cli-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  const ids = ConcurrentBitmap.open('in-a-dir', { capacity: 64, directory: dir })
  ids.allocateMany(5)
  ids.close()
  fs.writeFileSync(path.join(dir, 'README'), 'not a region')
  assert.deepStrictEqual(
    json('list', '--dir', dir).map((r) => [r.name, r.inUse]),
    [['in-a-dir', 5]],
  )
  assert.strictEqual(json('inspect', 'in-a-dir', '--dir', dir).inUse, 5)
  assert.match(run('list', '--dir', path.join(dir, 'nope')).stderr, /^numballoc: /)
})

test('--help on every command', () => {
  const top = run('--help')
  assert.strictEqual(top.status, 0)
  for (const command of ['list', 'inspect', 'reclaim', 'destroy']) {
    assert.match(top.stdout, new RegExp(`^  ${command} `, 'm'))
    for (const help of [run(command, '--help'), run('help', command)]) {
      assert.strictEqual(help.status, 0)
      assert.match(help.stdout, new RegExp(`^Usage: numballoc ${command}`))
    }
  }
  assert.strictEqual(run().status, 0)
})

test('a reader that stops early is no error; a missing --dir says so; a tiny share is not 0.0%', (t) => {
  const directory = fs.mkdtempSync('/tmp/numballoc-cli-pipe-')
  t.after(() => fs.rmSync(directory, { recursive: true, force: true }))
  for (let i = 0; i < 40; i++) loadShared(`region-${i}`, 8, { directory }).close()
  const piped = spawnSync(
    'sh',
    ['-c', `"${process.execPath}" "${BIN}" list --json --dir "${directory}" | head -c 10 >/dev/null; echo "status $?" >&2; exit \${PIPESTATUS:-0}`],
    { encoding: 'utf8' },
  )
  assert.doesNotMatch(piped.stderr, /EPIPE|Error/, piped.stderr)
  const missing = run('list', '--dir', '/nonexistent-numballoc-dir')
  assert.deepStrictEqual([missing.status, missing.stderr], [1, 'numballoc: no directory /nonexistent-numballoc-dir\n'])
  const ids = ConcurrentBitmap.open('tiny', { capacity: 65535, directory })
  t.after(() => ids.close())
  ids.allocateMany(8)
  assert.match(run('inspect', 'tiny', '--dir', directory).stdout, /^in use {4}8 \(<0\.1%\)$/m)
})

test(
  'run: a command gets a port and an ID in its environment, its exit status and signals pass through, and its numbers stay held while it lives, even if the wrapper is killed',
  { timeout: 60_000 },
  async (t) => {
    const { spawn } = require('node:child_process')
    const readline = require('node:readline')
    const pool = scratchName(t, 'runpool')
    const ids = scratchName(t, 'runids')
    const env = { ...process.env, NUMBALLOC_PORT_POOL: pool }
    const start = (command) => {
      const wrapper = spawn(process.execPath, [BIN, 'run', '--port', 'PORT', '--id', `WORKER_ID=${ids}:4`, '--', process.execPath, '-e', command], {
        env,
        stdio: ['ignore', 'pipe', 'inherit'],
      })
      const lines = readline.createInterface({ input: wrapper.stdout })
      const first = new Promise((resolve) => lines.once('line', (line) => resolve(JSON.parse(line))))
      const exited = new Promise((resolve) => wrapper.once('exit', (code, signal) => resolve(signal ?? code)))
      t.after(() => wrapper.exitCode === null && wrapper.kill('SIGKILL'))
      return { wrapper, first, exited }
    }
    const report = 'console.log(JSON.stringify({ port: process.env.PORT, id: process.env.WORKER_ID, pid: process.pid }))'
    const check = ConcurrentBitmap.open(ids, { capacity: 4 })
    t.after(() => check.close())

    // Exit status passes through; the numbers are given back when the command exits.
    const quick = start(`${report}; process.exit(7)`)
    const got = await quick.first
    assert.ok(Number(got.port) > 0 && got.id === '0', JSON.stringify(got))
    assert.strictEqual(await quick.exited, 7)
    assert.strictEqual(check.count(), 0)

    // A command ended by a signal ends the wrapper with the same signal (a shell loop stops).
    const killed = start(`${report}; process.kill(process.pid, 'SIGTERM')`)
    await killed.first
    assert.strictEqual(await killed.exited, 'SIGTERM')
    // The command's options are never taken for the wrapper's: it must come after --.
    const noSeparator = run('run', 'echo', 'hello', '--json')
    assert.strictEqual(noSeparator.status, 2)
    assert.match(noSeparator.stderr, /needs -- before the COMMAND/)
    assert.strictEqual(run('run', process.execPath, '-e', '1').status, 2, 'an option of the command, refused')
    assert.strictEqual(run('run', '--port', 'P', '--port', 'P', '--', 'true').status, 2, 'a variable given twice')

    // A SIGTERM to the wrapper reaches the command.
    const signalled = start(`process.on('SIGTERM', () => process.exit(3)); ${report}; setInterval(() => {}, 1000)`)
    await signalled.first
    signalled.wrapper.kill('SIGTERM')
    assert.strictEqual(await signalled.exited, 3)

    // The wrapper SIGKILLed: the command still holds its ID (and port) until it ends.
    const orphan = start(`${report}; setInterval(() => {}, 1000)`)
    const held = await orphan.first
    t.after(() => {
      try {
        process.kill(held.pid, 'SIGKILL')
      } catch {
        // already gone
      }
    })
    orphan.wrapper.kill('SIGKILL')
    await orphan.exited
    assert.strictEqual(check.reclaim(), 0, 'the command lives: nothing to reclaim')
    assert.strictEqual(check.isAllocated(Number(held.id)), true)
    process.kill(held.pid, 'SIGKILL')
    let reclaimed = 0
    for (let i = 0; i < 300 && check.count() > 0; i++) {
      reclaimed += check.reclaim()
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    assert.strictEqual(check.count(), 0, `the command's ID came back once it died (${reclaimed} reclaimed)`)
  },
)
