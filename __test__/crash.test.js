'use strict'
// Numbers held by dead processes come back: processes killed with SIGKILL, real shared memory.
const test = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const { ConcurrentBitmap } = require('..')

const { scratchName, forkFixture, waitFor, kill9, rustHolder, torture } = require('./helpers')

/** Forks an agent that allocates `count` numbers and reports them; resolves once it has. */
async function holderOf(name, capacity, count) {
  const child = forkFixture('agent.js', [name, capacity, 'any'])
  await waitFor(child, (m) => m === 'ready')
  const reply = waitFor(child, (m) => m.id === 0)
  child.send({ id: 0, method: 'allocate', times: count })
  return { child, numbers: (await reply).results }
}

test('a process killed with SIGKILL holding 100 numbers: reclaim() gives back exactly those', async (t) => {
  const name = scratchName(t, 'kill')
  const own = ConcurrentBitmap.open(name, { capacity: 1000 })
  t.after(() => own.close())
  const mine = own.allocateMany(5)
  const { child, numbers } = await holderOf(name, 1000, 100)
  assert.equal(numbers.length, 100)
  assert.deepEqual(own.holderOf(numbers[0]), { pid: child.pid })
  assert.deepEqual(own.holderOf(mine[0]), { pid: process.pid })
  assert.equal(await kill9(child), 'SIGKILL')
  assert.equal(own.count(), 105, 'a killed process keeps its numbers until reclaimed')
  assert.equal(own.reclaim(), 100)
  assert.equal(own.count(), 5, 'only the live holder keeps its numbers')
  for (const n of numbers) assert.equal(own.holderOf(n), null)
  for (const n of mine) assert.equal(own.isAllocated(n), true)
  assert.equal(own.reclaim(), 0)
})

test('a full region reclaims dead holders before reporting ERR_NO_FREE_NUMBER (unless told not to)', async (t) => {
  const name = scratchName(t, 'full')
  // Both open before the holder dies, so opening reclaims nothing: a full region must.
  const strict = ConcurrentBitmap.open(name, { capacity: 50, reclaimWhenFull: false })
  t.after(() => strict.close())
  const pool = ConcurrentBitmap.open(name, { capacity: 50 })
  t.after(() => pool.close())
  const { child, numbers } = await holderOf(name, 50, 50)
  assert.equal(numbers.length, 50)
  await kill9(child)
  assert.throws(() => strict.allocate(), { code: 'ERR_NO_FREE_NUMBER' })
  const n = pool.allocate()
  assert.ok(numbers.includes(n))
  assert.equal(pool.count(), 1, 'the other 49 came back free')
})

test('opening a region reclaims what dead holders held: lowest gives 0 after a SIGKILL and after normal exits', async (t) => {
  const name = scratchName(t, 'reopen')
  const { child, numbers } = await holderOf(name, 50, 50)
  await kill9(child)
  const ids = ConcurrentBitmap.open(name, { capacity: 50, policy: 'lowest' })
  t.after(() => ids.close())
  assert.equal(ids.count(), 0, `opening reclaimed the killed holder's ${numbers.length} numbers`)
  assert.equal(ids.allocate(), 0)
  ids.free(0)
  // Three processes one after another, each taking the lowest ID and exiting normally.
  const got = []
  for (let i = 0; i < 3; i++) {
    const agent = forkFixture('agent.js', [name, 50, 'lowest'])
    await waitFor(agent, (m) => m === 'ready')
    const reply = waitFor(agent, (m) => m.id === i)
    agent.send({ id: i, method: 'allocate' })
    got.push((await reply).results[0])
    await new Promise((resolve) => {
      agent.once('exit', resolve)
      agent.disconnect()
    })
  }
  assert.deepEqual(got, [0, 0, 0], 'a process that exits gives its ID back')
  assert.equal(ids.count(), 0)
})

test("a region without holders keeps a killed process's numbers (and says so)", async (t) => {
  const name = scratchName(t, 'noholders')
  const own = ConcurrentBitmap.open(name, { capacity: 64, holders: false })
  t.after(() => own.close())
  const { child, numbers } = await holderOf(name, 64, 10)
  assert.equal(own.holderOf(numbers[0]), null)
  await kill9(child)
  assert.equal(own.reclaim(), 0)
  assert.equal(own.count(), 10)
})

test(
  'crash torture: 100+ SIGKILLs at random moments, also mid-registration; after reclaim() only live holders hold numbers, none twice',
  { timeout: 180_000 },
  async (t) => {
    const name = scratchName(t, 'torture')
    const capacity = 48 // 4 live workers hold up to 16; dead ones fill the rest, so reclaims run
    // Rust processes that, in a loop, take a holder slot (reclaiming the dead), take 2 numbers and
    // give the slot back: killed at random, they die mid-registration, mid-reclaim and mid-sweep.
    const churner = () => spawn(rustHolder(), [name, capacity / 8, 2, 'register-churn'], { stdio: 'ignore' })
    const { check, finish } = await torture(t, {
      name,
      kind: 'bitmap',
      capacity,
      kills: 150,
      workers: 4,
      churner,
      churnerShare: 0.4,
      pauseMs: () => 2 + Math.random() * 20,
    })
    await finish()
    assert.equal(check.count(), 0)
  },
)

test("4 processes reclaiming at the same instant free each dead holder's number exactly once", async (t) => {
  const name = scratchName(t, 'reclaimrace')
  // The reclaimers open first: opening after the death would reclaim on its own.
  const agents = []
  for (let i = 0; i < 4; i++) {
    const agent = forkFixture('agent.js', [name, 4096, 'any'])
    t.after(() => agent.connected && agent.send({ method: 'exit' }))
    await waitFor(agent, (m) => m === 'ready')
    agents.push(agent)
  }
  const { child } = await holderOf(name, 4096, 1000)
  await kill9(child)
  const startAt = Date.now() + 50
  const replies = agents.map((agent, id) => {
    const reply = waitFor(agent, (m) => m.id === id)
    agent.send({ id, method: 'reclaim', startAt })
    return reply
  })
  const freed = (await Promise.all(replies)).map((r) => r.results[0])
  assert.equal(
    freed.reduce((a, b) => a + b, 0),
    1000,
    `each reclaimer freed ${freed.join(', ')}`,
  )
  const check = ConcurrentBitmap.open(name, { capacity: 4096 })
  t.after(() => check.close())
  assert.equal(check.count(), 0)
})
