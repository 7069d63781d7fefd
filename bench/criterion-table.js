'use strict'
// Turns `cargo bench -p numballoc-core` output into the Markdown tables of BENCHMARKS.md:
//   cargo bench -p numballoc-core --bench bitmap | node bench/criterion-table.js
const lines = require('node:fs').readFileSync(0, 'utf8').split('\n')
const units = { ps: 1e-3, ns: 1, µs: 1e3, us: 1e3, ms: 1e6 }
const medians = new Map()
let current = null
for (const line of lines) {
  // criterion prints "name  time: [low median high]", or the name alone when it is long.
  const named = line.match(/^(\S+)(?:\s+time:.*)?$/)
  if (named && !line.startsWith('Benchmarking') && !line.includes('change')) current = named[1]
  const time = line.match(/time:\s+\[\S+ \S+ (\S+) (\S+) /)
  if (time && current && units[time[2]]) medians.set(current, Number(time[1]) * units[time[2]])
}
const fmt = (ns) => (ns >= 1000 ? `${(ns / 1000).toFixed(1)} µs` : `${ns.toFixed(1)} ns`)

const floor = medians.get('floor/cas-and')
console.log('| capacity | fill | numballoc | Go algorithm | numballoc / Go algorithm | numballoc / bare CAS + AND |')
console.log('|---|---|---|---|---|---|')
for (const [key, ours] of medians) {
  const m = key.match(/^pair\/numballoc\/(2\^\d+)\/(\d+%)$/)
  if (!m) continue
  const go = medians.get(`pair/go/${m[1]}/${m[2]}`)
  console.log(`| ${m[1]} | ${m[2]} | ${fmt(ours)} | ${fmt(go)} | ${(ours / go).toFixed(2)} | ${floor ? (ours / floor).toFixed(2) : '-'} |`)
}
if (floor) console.log(`\nbare CAS + AND on one word (floor/cas-and): ${fmt(floor)}`)
console.log('\n| capacity | one free, fresh handle | empty region, fresh handle | one free / empty | Go algorithm, one free | Go / numballoc |')
console.log('|---|---|---|---|---|---|')
for (const [key, ours] of medians) {
  const m = key.match(/^one_free\/numballoc\/(2\^\d+)$/)
  if (!m) continue
  const empty = medians.get(`one_free/empty/numballoc/${m[1]}`)
  const go = medians.get(`one_free/go/${m[1]}`)
  console.log(`| ${m[1]} | ${fmt(ours)} | ${fmt(empty)} | ${(ours / empty).toFixed(1)} | ${fmt(go)} | ${(go / ours).toFixed(0)} |`)
}

const policyRows = [...medians].filter(([key]) => key.startsWith('policy/'))
if (policyRows.length > 0) {
  const any = medians.get('policy/any/random-50%')
  console.log('\n| policy | region | pair | ratio to `any`, random 50% |')
  console.log('|---|---|---|---|')
  for (const [key, ns] of policyRows) {
    const [, policy, fill] = key.split('/')
    console.log(`| ${policy} | ${fill} | ${fmt(ns)} | ${(ns / any).toFixed(2)} |`)
  }
}
const extentRows = [...medians].filter(([key]) => key.startsWith('extent/'))
if (extentRows.length > 0) {
  const single = medians.get('pair/numballoc/2^14/50%')
  console.log('\n| operation (2^14 numbers, 50% random fill) | time | per number | per number / single pair |')
  console.log('|---|---|---|---|')
  for (const [key, ns] of extentRows) {
    const [, kind, shape] = key.split('/')
    const numbers = kind === 'many' ? Number(shape) : Number(shape.split('x')[0])
    const label = kind === 'many' ? `try_allocate_many(${shape}) + free_many` : `block of ${shape.replace('x', ', aligned to ')} + free_block`
    console.log(`| ${label} | ${fmt(ns)} | ${fmt(ns / numbers)} | ${(ns / numbers / single).toFixed(2)} |`)
  }
}

const contention = ['numballoc', 'lowest', 'cyclic', 'go'].map((impl) => [
  impl,
  medians.get(`contention/${impl}/1-threads`),
  medians.get(`contention/${impl}/2-threads`),
])
if (contention.some(([, one, two]) => one && two)) {
  console.log('\n| implementation | 1 thread: time per pair | 2 threads: time per pair, combined | throughput, 2 threads / 1 |')
  console.log('|---|---|---|---|')
  const label = { numballoc: 'numballoc, any', lowest: 'numballoc, lowest', cyclic: 'numballoc, cyclic', go: 'Go algorithm' }
  for (const [impl, one, two] of contention.filter(([, one, two]) => one && two)) {
    console.log(`| ${label[impl]} | ${fmt(one)} | ${fmt(two)} | ${(one / two).toFixed(2)}× |`)
  }
}

const scaleRows = [...medians].filter(([key]) => key.startsWith('scale/') || key.startsWith('holder/'))
if (scaleRows.length > 0) {
  console.log('\n| what | capacity | time |')
  console.log('|---|---|---|')
  for (const [key, ns] of scaleRows) {
    const parts = key.split('/')
    const log2 = parts.pop()
    const what = parts.slice(1).join('/')
    const size = what === 'reclaim-live' ? `${log2} other holders` : `2^${log2}`
    console.log(`| ${what} | ${size} | ${ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : fmt(ns)} |`)
  }
}

const withHolders = medians.get('holders/with')
const withoutHolders = medians.get('holders/without')
if (withHolders && withoutHolders) {
  console.log('\n| region (2^14 numbers, 50% fill) | pair | ratio |')
  console.log('|---|---|---|')
  console.log(`| without holder records | ${fmt(withoutHolders)} | 1.00 |`)
  console.log(`| with holder records (default) | ${fmt(withHolders)} | ${(withHolders / withoutHolders).toFixed(2)} |`)
}
