'use strict'
// bench/index.js's runner scenario: how a test file in a Jest worker gets its port. BENCH_PORTS:
//   numballoc  numballoc's getPort({ port: portNumbers(8000, 8100) })
//   get-port   get-port's getPort({ port: portNumbers(8000, 8100) })
//   offset     8000 + JEST_WORKER_ID, the usual hand-made scheme
// Each file listens on its port, holds it for a moment as a test would, and appends one JSON
// line { micros, error } to BENCH_OUT.
const fs = require('node:fs')
const http = require('node:http')

/** Loads what the chosen way needs (not timed: a test file does it once, at the top). */
async function load() {
  const how = process.env.BENCH_PORTS
  if (how === 'numballoc') return require('numballoc')
  if (how === 'get-port') return import('get-port')
  return {}
}

async function choose(lib) {
  const how = process.env.BENCH_PORTS
  if (how === 'offset') return { port: 8000 + Number(process.env.JEST_WORKER_ID), release() {} }
  if (how === 'numballoc') {
    const port = await lib.getPort({ port: lib.portNumbers(8000, 8100) })
    return { port, release: () => lib.releasePort(port) }
  }
  return { port: await lib.default({ port: lib.portNumbers(8000, 8100) }), release() {} }
}

async function serveOnce() {
  const lib = await load()
  const start = process.hrtime.bigint()
  const { port, release } = await choose(lib)
  const micros = Number(process.hrtime.bigint() - start) / 1000
  const server = http.createServer((request, response) => response.end('ok'))
  const error = await new Promise((resolve) => {
    server.once('error', (e) => resolve(e.code))
    server.listen(port, () => resolve(null))
  })
  if (!error) {
    await new Promise((resolve) => setTimeout(resolve, 50))
    await new Promise((resolve) => server.close(resolve))
  }
  release()
  fs.appendFileSync(process.env.BENCH_OUT, `${JSON.stringify({ micros, error })}\n`)
}

module.exports = { serveOnce }
