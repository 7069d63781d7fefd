'use strict'
// The examples in examples/ run as documented, and do what they say.
const test = require('node:test')
const assert = require('node:assert')
const { fork } = require('node:child_process')
const http = require('node:http')
const path = require('node:path')
const { inspectShared, listShared } = require('..')
const { scratchName, messages, freePortRange } = require('./helpers')
const { runRound } = require('../examples/test-workers.js')

const EXAMPLES = path.join(__dirname, '..', 'examples')

function get(port) {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, agent: false }, (res) => {
        let body = ''
        res.on('data', (chunk) => (body += chunk))
        res.on('end', () => resolve(JSON.parse(body)))
      })
      .on('error', reject)
  })
}

test('cluster-ports: 4 workers serve on their own ports; a SIGKILLed one is replaced on its port', { timeout: 60_000 }, async (t) => {
  const pool = scratchName(t, 'cluster')
  // Exactly 4 ports for 4 workers: the replacement can only get a port by reclaiming the dead one's.
  const from = await freePortRange(4)
  const primary = fork(path.join(EXAMPLES, 'cluster-ports.js'), {
    env: { ...process.env, POOL: pool, PORTS_FROM: String(from), PORTS_TO: String(from + 3), WORKERS: '4' },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const exited = new Promise((resolve) => primary.once('exit', resolve))
  t.after(async () => {
    if (primary.exitCode === null) primary.send('shutdown')
    await exited
  })
  const listening = []
  // The four workers report at once: a queue, so that messages arriving together are not missed.
  const reports = messages(primary)
  const next = () => reports.next((m) => m.event === 'listening' && !listening.some((l) => l.pid === m.pid)).then((m) => (listening.push(m), m))
  for (let i = 0; i < 4; i++) await next()
  const ports = listening.map((l) => l.port).sort((a, b) => a - b)
  assert.deepStrictEqual(ports, [from, from + 1, from + 2, from + 3])
  for (const { pid, port } of listening) assert.deepStrictEqual(await get(port), { pid, port })

  const victim = listening[1]
  process.kill(victim.pid, 'SIGKILL')
  const died = await reports.next((m) => m.event === 'exit')
  assert.deepStrictEqual([died.pid, died.signal], [victim.pid, 'SIGKILL'])
  const replacement = await next()
  assert.strictEqual(replacement.port, victim.port, "the replacement got the dead worker's port back")
  assert.notStrictEqual(replacement.pid, victim.pid)

  const serving = listening.filter((l) => l !== victim)
  for (const { pid, port } of serving) assert.deepStrictEqual(await get(port), { pid, port })
  const report = inspectShared(pool)
  assert.strictEqual(report.inUse, 4)
  assert.deepStrictEqual(report.holders.map((h) => h.pid).sort(), serving.map((l) => l.pid).sort())

  primary.send('shutdown')
  assert.strictEqual(await exited, 0)
  // Workers that exit normally give their ports back.
  assert.strictEqual(inspectShared(pool).inUse, 0)
})

test('test-workers: processes started at once each get a port, and none collide', { timeout: 120_000 }, async (t) => {
  const pool = scratchName(t, 'runner')
  for (let round = 0; round < 5; round++) {
    const got = await runRound({ workers: 6, env: { NUMBALLOC_PORT_POOL: pool } })
    assert.deepStrictEqual(
      got.map((g) => g.error),
      got.map(() => null),
      `round ${round}: ${JSON.stringify(got)}`,
    )
    assert.strictEqual(new Set(got.map((g) => g.port)).size, 6, `round ${round}: distinct ports`)
  }
  // Each round's workers exited holding their ports; the next round got ports regardless.
  assert.strictEqual(
    inspectShared(pool).holders.every((h) => !h.alive),
    true,
  )
})

test('npm start: the cluster demo replaces a SIGKILLed worker, which gets its ID back, and leaves nothing behind', { timeout: 120_000 }, async (t) => {
  const { execFileSync } = require('node:child_process')
  const name = scratchName(t, 'demo')
  const from = await freePortRange(16)
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
  const out = execFileSync(npm, ['start', '--silent'], {
    cwd: path.join(__dirname, '..'),
    env: { ...process.env, DEMO_NAME: name, DEMO_PORTS: String(from) },
    encoding: 'utf8',
  })
  assert.match(out, /workers are up:/)
  assert.match(out, /\$ numballoc inspect .*-ids --cells 16\nregion {4}/)
  assert.match(out, /occupancy \(one cell = 1 number/)
  const summary = JSON.parse(
    out
      .split('\n')
      .find((line) => line.startsWith('summary '))
      .slice('summary '.length),
  )
  assert.strictEqual(summary.replacement.id, summary.victim.id, "the replacement got the dead worker's ID")
  assert.notStrictEqual(summary.replacement.pid, summary.victim.pid)
  assert.ok(summary.replacement.port >= from && summary.replacement.port < from + 16)
  assert.deepStrictEqual(summary.left, { ids: 0, ports: 0 })
  assert.ok(!listShared().some((region) => region.startsWith(name)), 'both regions removed')
})
