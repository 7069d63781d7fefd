'use strict'
// A smoke test of an installed numballoc, run by `npm run artifacts` in an app that installed a
// release, under the node of the platform being checked (natively, or under qemu-user). It loads
// the package from CommonJS and ESM and exercises what the platform's binary must do: numbers
// shared by processes, a holder killed with SIGKILL and reclaimed, a worker thread's numbers given
// back when it ends, and getPortSync. Prints one JSON line; throws on any failure.
//
//   node scripts/smoke.js              (in the app's directory)
//   NUMBALLOC_SMOKE_NODE='["qemu-aarch64","-L","/usr/aarch64-linux-gnu","/path/to/node"]'
//                                      how to start another process of the same node
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const { Worker } = require('node:worker_threads')
const numballoc = require('numballoc')

const [node, ...nodeArgs] = JSON.parse(process.env.NUMBALLOC_SMOKE_NODE ?? JSON.stringify([process.execPath]))

function child(name, count) {
  const script = `
    const ids = require('numballoc').ConcurrentBitmap.open(${JSON.stringify(name)})
    console.log(JSON.stringify(Array.from({ length: ${count} }, () => ids.allocate())))
    setInterval(() => {}, 1000)`
  const proc = spawn(node, [...nodeArgs, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
  const numbers = new Promise((resolve, reject) => {
    let out = ''
    proc.stdout.on('data', (chunk) => {
      out += chunk
      if (out.includes('\n')) resolve(JSON.parse(out))
    })
    proc.on('exit', (code) => reject(new Error(`a child exited (${code}) before allocating`)))
  })
  return { proc, numbers }
}

function exited(proc) {
  return new Promise((resolve) => proc.once('exit', resolve))
}

async function main() {
  const esm = await import('numballoc')
  assert.equal(esm.ConcurrentBitmap, numballoc.ConcurrentBitmap, 'import and require give the same classes')

  const name = `numballoc-smoke-${process.pid}`
  const ids = numballoc.ConcurrentBitmap.open(name, { capacity: 64, policy: 'lowest' })
  const children = []
  try {
    const mine = ids.allocateMany(8)
    const [a, b] = [child(name, 16), child(name, 16)]
    children.push(a.proc, b.proc)
    const theirs = [...(await a.numbers), ...(await b.numbers)]
    const all = [...mine, ...theirs]
    assert.equal(new Set(all).size, 40, 'no number was handed out twice')
    assert.equal(ids.count(), 40)

    a.proc.kill('SIGKILL')
    await exited(a.proc)
    assert.equal(ids.reclaim(), 16, "a killed holder's numbers are reclaimed")
    b.proc.kill('SIGTERM')
    await exited(b.proc)
    ids.reclaim()
    assert.equal(ids.count(), 8, 'only our own numbers are left')

    const worker = new Worker(`require('numballoc').ConcurrentBitmap.open(${JSON.stringify(name)}).allocateMany(4)`, { eval: true })
    await new Promise((resolve, reject) => worker.on('exit', resolve).on('error', reject))
    assert.equal(ids.count(), 8, "a worker thread's numbers come back when it ends")

    const port = numballoc.getPortSync()
    assert.ok(Number.isInteger(port) && port > 0)
    numballoc.releasePort(port)
    // Which binary the package loaded: the caller checks it is the platform package's.
    const addon = Object.keys(require.cache).find((file) => file.endsWith('.node'))
    console.log(JSON.stringify({ ok: true, arch: process.arch, addon, numbers: all.length, port }))
  } finally {
    // On a failure too: children left running would hold the caller's output pipe open.
    for (const proc of children) if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
    ids.close()
    numballoc.destroyShared(name)
    // The pool getPortSync used, if the caller named one for this test (never this user's own).
    if (process.env.NUMBALLOC_PORT_POOL) numballoc.destroyShared(process.env.NUMBALLOC_PORT_POOL)
  }
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
