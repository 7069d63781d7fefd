'use strict'
// Several processes started at once, as a parallel test runner starts its workers, each get a
// port for a server and listen on it. With numballoc none collide; with get-port, processes that
// ask at the same moment get the same port, and all but one fail with EADDRINUSE.
//
//   node examples/test-workers.js            # 8 workers, numballoc's getPort
//   node examples/test-workers.js 8 get-port # the same with get-port (a devDependency)
//
// Each worker asks for a preferred port first, as test suites do:
// getPort({ port: portNumbers(3000, 3100) }). runRound() is also what bench/ports.js measures.

const { fork } = require('node:child_process')
const http = require('node:http')
const { performance } = require('node:perf_hooks')

const FROM = 3000
const TO = 3100

/**
 * One test worker: get a port (a preferred one of FROM-TO, or with `ask` 'any' whatever the
 * library picks), listen on it, report, and keep serving until told to stop.
 */
async function worker(impl, ask) {
  let getPort
  let portNumbers
  if (impl === 'get-port') {
    ;({ default: getPort, portNumbers } = await import('get-port'))
  } else {
    ;({ getPort, portNumbers } = require('..'))
  }
  // Every worker is ready before any asks, so they ask at the same moment.
  const go = new Promise((resolve) => process.once('message', resolve))
  process.send('ready')
  await go
  const started = performance.now()
  const port = await getPort(ask === 'any' ? undefined : { port: portNumbers(FROM, TO) })
  const micros = (performance.now() - started) * 1000
  const server = http.createServer((_req, res) => res.end(String(process.pid)))
  server.once('error', (error) => {
    process.send({ port, micros, error: error.code })
    process.once('message', () => process.exit(0))
  })
  server.listen(port, () => {
    process.send({ port, micros, error: null })
    process.once('message', () => server.close(() => process.exit(0)))
  })
}

/**
 * Starts `workers` processes at once; resolves with what each got: `{ port, micros, error }`
 * (`error` is the listen error's code, `EADDRINUSE` on a collision). `impl` is 'numballoc' or
 * 'get-port'; `ask` 'range' (preferred ports FROM-TO) or 'any'; `env` is added to theirs.
 */
async function runRound({ workers = 8, impl = 'numballoc', ask = 'range', env = {} } = {}) {
  const children = []
  for (let i = 0; i < workers; i++) {
    children.push(fork(__filename, ['--worker', impl, ask], { env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }))
  }
  const exits = children.map((child) => new Promise((resolve) => child.once('exit', resolve)))
  try {
    await Promise.all(children.map((child) => new Promise((resolve) => child.once('message', resolve))))
    const results = children.map((child) => new Promise((resolve) => child.once('message', resolve)))
    for (const child of children) child.send('go')
    const got = await Promise.all(results)
    for (const child of children) child.send('stop')
    return got
  } finally {
    for (const child of children) if (child.exitCode === null) child.kill()
    await Promise.all(exits)
  }
}

if (require.main === module) {
  if (process.argv[2] === '--worker') {
    worker(process.argv[3], process.argv[4])
  } else {
    const workers = Number(process.argv[2] ?? 8)
    const impl = process.argv[3] ?? 'numballoc'
    runRound({ workers, impl }).then((got) => {
      for (const { port, error } of got) console.log(`port ${port}: ${error ?? 'listening'}`)
      const collisions = got.filter((g) => g.error === 'EADDRINUSE').length
      console.log(`${impl}: ${workers} workers, ${new Set(got.map((g) => g.port)).size} distinct ports, ${collisions} EADDRINUSE`)
      process.exitCode = collisions === 0 ? 0 : 1
    })
  }
}

module.exports = { runRound }
