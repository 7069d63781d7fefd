'use strict'
// Every README code block marked as a program (```js program) is a complete program: it runs as
// written, as an ES module importing the package by name, and ends with status 0.
const test = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { destroyShared } = require('..')
const { scratchName } = require('./helpers')
const { startRedis } = require('./redis-server.js')

const root = path.join(__dirname, '..')
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8')
const programs = [...readme.matchAll(/^```js program\n([\s\S]*?)^```$/gm)].map((m) => m[1])
// The regions the programs name, removed after each (a scratch pool stands in for getPort's).
const REGIONS = ['my-app-admin', 'worker-ids', 'ports', 'gpu-slots']

let redis
test.before(async () => {
  redis = await startRedis(null)
})
test.after(() => redis?.cleanup())

test('the README has programs to run', () => {
  assert.ok(programs.length >= 4, `${programs.length} blocks marked as programs`)
})

programs.forEach((source, index) => {
  const title = source.split('\n').find((line) => line && !line.startsWith('import')) ?? ''
  test(`README program ${index + 1} runs as written: ${title.trim().slice(0, 60)}`, { timeout: 60_000 }, (t) => {
    const dir = path.join(root, 'target', 'readme') // inside the package: 'numballoc' resolves to itself
    fs.mkdirSync(dir, { recursive: true })
    const file = path.join(dir, `program-${index + 1}.mjs`)
    fs.writeFileSync(file, source)
    t.after(() => REGIONS.forEach((name) => destroyShared(name)))
    // REDIS_URL: the Redis program's server, one of the test's own.
    const env = { ...process.env, NUMBALLOC_PORT_POOL: scratchName(t, 'readme-ports'), REDIS_URL: redis.url }
    const out = execFileSync(process.execPath, [file], { env, encoding: 'utf8', timeout: 50_000 })
    assert.ok(typeof out === 'string')
  })
})
