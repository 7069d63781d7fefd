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

module.exports = { scratchName, collect, forkFixture, waitFor, messages, portIsFree, freePortRange, occupy }
