'use strict'
// Shared by the Node tests: unique region names that are destroyed even when a test fails, and
// child processes that report over IPC.
const { fork } = require('node:child_process')
const path = require('node:path')
const { destroyShared } = require('..')

let sequence = 0

/** A region name no other test, process or run uses; destroyed when the test ends, pass or fail. */
function scratchName(t, tag) {
  const name = `numballoc-test-${tag}-${process.pid}-${sequence++}-${Math.random().toString(36).slice(2, 8)}`
  t.after(() => destroyShared(name))
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
    const onMessage = (m) => {
      if (predicate(m)) {
        child.off('message', onMessage)
        resolve(m)
      }
    }
    child.on('message', onMessage)
    child.once('exit', (code) => reject(new Error(`child exited (${code}) before the expected message`)))
  })
}

module.exports = { scratchName, collect, forkFixture, waitFor }
