'use strict'
// Real processes on one region. Each test asserts what holds in every interleaving; the rounds
// and process counts are there to produce many interleavings on a 2-core machine.
const test = require('node:test')
const assert = require('node:assert/strict')
const cluster = require('node:cluster')
const fs = require('node:fs')
const path = require('node:path')
const { ConcurrentBitmap, loadShared } = require('..')
const { scratchName, collect, forkFixture, waitFor } = require('./helpers')

const range = (n) => Array.from({ length: n }, (_, i) => i)

test('4 forked children and 4 cluster workers exhaust one region: every number exactly once', async (t) => {
  const name = scratchName(t, 'exhaust')
  const capacity = 20000
  cluster.setupPrimary({ exec: path.join(__dirname, 'fixtures', 'exhaust.js'), silent: false })
  const children = [
    ...range(4).map(() => forkFixture('exhaust.js', [name, capacity])),
    ...range(4).map(() => cluster.fork({ NUMBALLOC_ARGS: JSON.stringify([name, capacity]) })),
  ]
  const results = children.map((child) => collect(child.process ?? child))
  await Promise.all(children.map((child) => waitFor(child.process ?? child, (m) => m === 'ready')))
  for (const child of children) child.send('go')
  const reports = await Promise.all(children.map((child) => waitFor(child.process ?? child, (m) => m.numbers)))
  const all = reports.flatMap((r) => r.numbers)
  assert.equal(all.length, capacity, 'every number handed out once in total')
  assert.deepEqual(
    all.sort((a, b) => a - b),
    range(capacity),
    'no number twice, none missing',
  )
  for (const r of reports) assert.equal(r.error, 'ERR_NO_FREE_NUMBER')
  const check = ConcurrentBitmap.open(name, { capacity })
  t.after(() => check.close())
  assert.equal(check.count(), capacity)
  for (const child of children) child.send('exit')
  await Promise.all(results)
  assert.equal(check.count(), 0, 'processes that exit normally give their numbers back')
})

test('churn across 4 processes: no number is ever held by two processes at once', async (t) => {
  const name = scratchName(t, 'churn')
  const witnessDir = fs.mkdtempSync('/tmp/numballoc-witness-')
  t.after(() => fs.rmSync(witnessDir, { recursive: true, force: true }))
  // 24 numbers for 4 processes that each hold up to 4: the region is often nearly full.
  const children = range(4).map(() => forkFixture('churn.js', [name, witnessDir, 24, 30000]))
  const results = children.map(collect)
  await Promise.all(children.map((child) => waitFor(child, (m) => m === 'ready')))
  for (const child of children) child.send('go')
  const reports = (await Promise.all(results)).map((messages) => messages.find((m) => m.overlaps))
  assert.deepEqual(
    reports.flatMap((r) => r.overlaps),
    [],
    'a number was held by two processes at once',
  )
  for (const r of reports) assert.ok(r.taken > 1000, `a process took only ${r.taken} numbers`)
  assert.deepEqual(fs.readdirSync(witnessDir), [])
  const check = ConcurrentBitmap.open(name, { capacity: 24 })
  t.after(() => check.close())
  assert.equal(check.count(), 0, 'every number came back')
})

test('creation race: 8 processes open a new region at the same instant, 60 rounds', async (t) => {
  const capacity = 512
  const children = range(8).map(() => forkFixture('race.js', [capacity]))
  const results = children.map(collect)
  await Promise.all(children.map((child) => waitFor(child, (m) => m === 'ready')))
  for (let round = 0; round < 60; round++) {
    const name = scratchName(t, `race${round}`)
    const startAt = Date.now() + 15
    const replies = children.map((child) => waitFor(child, (m) => m.numbers))
    for (const child of children) child.send({ name, startAt })
    const all = (await Promise.all(replies)).flatMap((r) => r.numbers)
    assert.deepEqual(
      all.sort((a, b) => a - b),
      range(capacity),
      `round ${round}: a number twice or missing`,
    )
  }
  for (const child of children) child.send({ done: true })
  await Promise.all(results) // every child exits 0: none died of SIGBUS or an error
})

test('repair race: processes open, open by name and inspect a region while one completes it, 150 rounds, none faults', async (t) => {
  const roles = ['open', 'open', 'byname', 'byname', 'byname', 'inspect', 'inspect', 'inspect']
  const children = roles.map((role) => forkFixture('repair.js', [role]))
  const results = children.map(collect)
  await Promise.all(children.map((child) => waitFor(child, (m) => m === 'ready')))
  const outcomes = new Set()
  for (let round = 0; round < 150; round++) {
    const name = scratchName(t, `repair${round}`)
    // Sized by a creator that died before the header: longer than the region the openers ask
    // for, so a repair that shrank it would cut pages the others have mapped.
    fs.writeFileSync(`/dev/shm/${name}`, Buffer.alloc(64 * 1024))
    const startAt = Date.now() + 10
    const replies = children.map((child) => waitFor(child, (m) => m.outcome))
    for (const child of children) child.send({ name, startAt })
    for (const { outcome } of await Promise.all(replies)) outcomes.add(outcome)
    assert.equal(loadShared(name).size, 16, `round ${round}: completed as the openers asked`)
  }
  for (const child of children) child.send({ done: true })
  await Promise.all(results) // every child exits 0: none died of SIGBUS
  assert.ok(
    [...outcomes].every((o) => ['ok', 'ERR_INCOMPATIBLE_REGION'].includes(o)),
    [...outcomes].join(', '),
  )
})

test('never a spurious ERR_NO_FREE_NUMBER: a victim against an adversary, one number always free', async (t) => {
  const name = scratchName(t, 'adversary')
  // One 64-bit word: the adversary's churn and the always-free number share it, so every change
  // the adversary makes fails the victim's compare-and-swap on the only word there is.
  const size = 8
  const capacity = size * 8
  // Fill everything the adversary can reach, then free a few numbers for it to churn.
  const mem = loadShared(name, size)
  t.after(() => mem.close())
  const setup = new ConcurrentBitmap(mem, capacity - 1)
  while (setup.tryAllocate() !== null);
  const churned = [3, 17, 30, 41, 52, 60]
  for (const n of churned) setup.free(n)
  const calls = 300000
  const adversary = forkFixture('adversary.js', ['adversary', name, size, 0])
  const victim = forkFixture('adversary.js', ['victim', name, size, calls])
  const results = [collect(adversary), collect(victim)]
  await Promise.all([adversary, victim].map((child) => waitFor(child, (m) => m === 'ready')))
  adversary.send('go')
  victim.send('go')
  const victimReport = (await results[1]).find((m) => m.spurious !== undefined)
  adversary.send('stop')
  const adversaryReport = (await results[0]).find((m) => m.operations !== undefined)
  assert.equal(victimReport.spurious, 0, `${victimReport.spurious} spurious "full" in ${calls} calls`)
  assert.ok(adversaryReport.operations > 100000, 'the adversary ran alongside')
  assert.equal(new ConcurrentBitmap(mem).isAllocated(capacity - 1), false)
  assert.equal(new ConcurrentBitmap(mem).count(), capacity - 1 - churned.length)
})
