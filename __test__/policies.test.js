'use strict'
// Policies, ranges, blocks and batches across real processes.
const test = require('node:test')
const assert = require('node:assert/strict')
const { ConcurrentBitmap } = require('..')
const { scratchName, collect, forkFixture, waitFor } = require('./helpers')

const range = (from, to) => Array.from({ length: to - from }, (_, i) => from + i)
const sorted = (xs) => [...xs].sort((a, b) => a - b)

/** Starts `count` agent processes on one region; each has call(method, args, options). */
async function agents(t, count, name, capacity, policy = 'any') {
  let nextId = 0
  const list = Array.from({ length: count }, () => {
    const child = forkFixture('agent.js', [name, capacity, policy])
    const done = collect(child)
    return {
      child,
      done,
      call(method, args = [], { times = 1, startAt = 0 } = {}) {
        const id = nextId++
        const reply = waitFor(child, (m) => m.id === id)
        child.send({ id, method, args, times, startAt })
        return reply
      },
    }
  })
  t.after(async () => {
    for (const agent of list) agent.child.connected && agent.child.send({ method: 'exit' })
    await Promise.all(list.map((agent) => agent.done))
  })
  await Promise.all(list.map((agent) => waitFor(agent.child, (m) => m === 'ready')))
  return list
}

/** Runs the same call in every agent at one instant; returns their replies. */
function together(list, method, args, times) {
  const startAt = Date.now() + 30
  return Promise.all(list.map((agent) => agent.call(method, args, { times, startAt })))
}

test("'lowest' across 4 racing processes: the numbers handed out are always dense", async (t) => {
  for (let round = 0; round < 10; round++) {
    const name = scratchName(t, `lowest${round}`)
    const list = await agents(t, 4, name, 1000, 'lowest')
    const replies = await together(list, 'allocate', [], 60)
    // No frees: had any number below some result been skipped, it stayed free the whole time.
    assert.deepEqual(sorted(replies.flatMap((r) => r.results)), range(0, 240), `round ${round}`)
    // A number given back is the next one handed out, whoever asks.
    await list[0].call('free', [replies[2].results[7]])
    assert.deepEqual((await list[3].call('allocate')).results, [replies[2].results[7]])
    assert.deepEqual((await list[1].call('allocate')).results, [240])
  }
})

test("'cyclic' across processes: the cursor is shared, a freed number comes back last", async (t) => {
  const name = scratchName(t, 'cyclic')
  const [a, b] = await agents(t, 2, name, 100, 'cyclic')
  assert.deepEqual((await a.call('allocateThenFree')).results, [0])
  // b continues after a's number, through every other number, before 0 comes back.
  assert.deepEqual((await b.call('allocateThenFree', [], { times: 99 })).results, range(1, 100))
  assert.deepEqual((await a.call('allocateThenFree')).results, [0])
  assert.deepEqual((await b.call('allocate', [], { times: 3 })).results, [1, 2, 3])
  await b.call('free', [2])
  assert.deepEqual((await a.call('allocate')).results, [4], 'the freed 2 is behind the cursor')
})

test('ranges: 3 racing processes fill [100, 199] exactly, and never go outside it', async (t) => {
  const name = scratchName(t, 'range')
  const list = await agents(t, 3, name, 300)
  const replies = await together(list, 'allocateInRange', [100, 199], 50)
  assert.deepEqual(sorted(replies.flatMap((r) => r.results)), range(100, 200))
  for (const reply of replies) assert.ok(reply.results.length === 50 || reply.code === 'ERR_NO_FREE_NUMBER')
  assert.deepEqual((await list[0].call('tryAllocateInRange', [100, 199])).results, [null])
  assert.deepEqual((await list[1].call('allocateInRange', [199, 201])).results, [200])
  const check = ConcurrentBitmap.open(name, { capacity: 300 })
  t.after(() => check.close())
  assert.equal(check.count(), 101)
})

test('blocks: 4 racing processes tile the region with aligned, disjoint blocks', async (t) => {
  for (let round = 0; round < 5; round++) {
    const name = scratchName(t, `blocks${round}`)
    const list = await agents(t, 4, name, 400)
    const replies = await together(list, 'allocateBlock', [10, 10], 40)
    const firsts = replies.flatMap((r) => r.results)
    for (const reply of replies) assert.equal(reply.code ?? 'ERR_NO_FREE_NUMBER', 'ERR_NO_FREE_NUMBER')
    for (const first of firsts) assert.equal(first % 10, 0)
    assert.deepEqual(
      sorted(firsts),
      range(0, 40).map((i) => i * 10),
      `round ${round}: a block twice or missing`,
    )
    // Every number is in exactly one block; freeBlock gives a block back whole.
    await list[0].call('freeBlock', [firsts[0], 10])
    const again = await list[1].call('allocateBlock', [10, 10])
    assert.deepEqual(again.results, [firsts[0]])
  }
})

test('blocks that do not fit leave nothing allocated; freeBlock refuses a partly free run', async (t) => {
  const name = scratchName(t, 'blockfail')
  const [a, b] = await agents(t, 2, name, 128)
  await a.call('allocateInRange', [60, 60])
  assert.equal((await b.call('allocateBlock', [100])).code, 'ERR_NO_FREE_NUMBER')
  assert.deepEqual((await b.call('tryAllocateBlock', [64, 64])).results, [64])
  const check = ConcurrentBitmap.open(name, { capacity: 128 })
  t.after(() => check.close())
  assert.equal(check.count(), 65, 'the failed attempt left nothing allocated')
  assert.equal((await a.call('freeBlock', [59, 3])).code, 'ERR_NOT_ALLOCATED')
  assert.equal(check.isAllocated(60), true, 'a refused freeBlock changes nothing')
})

test('batches: all or nothing across processes', async (t) => {
  const name = scratchName(t, 'many')
  const [a, b, c] = await agents(t, 3, name, 100)
  const replies = await together([a, b], 'allocateMany', [50], 1)
  const [fromA, fromB] = replies.map((r) => r.results[0])
  assert.deepEqual(sorted([...fromA, ...fromB]), range(0, 100))
  assert.equal((await c.call('allocateMany', [1])).code, 'ERR_NO_FREE_NUMBER')
  await a.call('freeMany', [fromA.slice(0, 30)])
  assert.equal((await c.call('allocateMany', [31])).code, 'ERR_NO_FREE_NUMBER')
  const check = ConcurrentBitmap.open(name, { capacity: 100 })
  t.after(() => check.close())
  assert.equal(check.count(), 70, 'the failed batch allocated nothing')
  assert.equal((await b.call('freeMany', [[fromB[0], fromA[0]]])).code, 'ERR_NOT_ALLOCATED')
  assert.equal(check.isAllocated(fromB[0]), true, 'a refused freeMany changes nothing')
  assert.equal((await c.call('allocateMany', [30])).results[0].length, 30)
})
