'use strict'
// Turns `cargo bench -p numballoc-core` output into the Markdown tables of BENCHMARKS.md:
//   cargo bench -p numballoc-core --bench bitmap | node bench/criterion-table.js
const lines = require('node:fs').readFileSync(0, 'utf8').split('\n')
const units = { ps: 1e-3, ns: 1, 'µs': 1e3, us: 1e3, ms: 1e6 }
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

console.log('| capacity | fill | numballoc | Go algorithm | numballoc / Go |')
console.log('|---|---|---|---|---|')
for (const [key, ours] of medians) {
  const m = key.match(/^pair\/numballoc\/(2\^\d+)\/(\d+%)$/)
  if (!m) continue
  const go = medians.get(`pair/go/${m[1]}/${m[2]}`)
  console.log(`| ${m[1]} | ${m[2]} | ${fmt(ours)} | ${fmt(go)} | ${(ours / go).toFixed(2)} |`)
}
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

const contention = ['numballoc', 'go'].map((impl) => [impl, medians.get(`contention/${impl}/1-threads`), medians.get(`contention/${impl}/2-threads`)])
if (contention.every(([, one, two]) => one && two)) {
  console.log('\n| implementation | 1 thread: time per pair | 2 threads: time per pair, combined | throughput, 2 threads / 1 |')
  console.log('|---|---|---|---|')
  for (const [impl, one, two] of contention) {
    console.log(`| ${impl === 'go' ? 'Go algorithm' : impl} | ${fmt(one)} | ${fmt(two)} | ${(one / two).toFixed(2)}× |`)
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
