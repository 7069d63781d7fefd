'use strict'
// A node:cluster primary with 4 workers. Each worker takes a port of its own from a shared pool
// and serves HTTP on it (a metrics or admin listener beside the cluster's shared port, say).
// When a worker dies, even by SIGKILL, the primary forks a replacement, which gets a port too:
// the dead worker's port comes back to the pool when no other port is free.
//
//   node examples/cluster-ports.js
//
// Settings (environment): POOL (region name, default 'cluster-ports-example'), PORTS_FROM and
// PORTS_TO (default 9200-9203), WORKERS (default 4). Run under a parent with an IPC channel
// (as the tests do), the primary reports each worker's port to it, and stops on 'shutdown'.

const cluster = require('node:cluster')
const http = require('node:http')
const { PortPool } = require('..')

const POOL = process.env.POOL ?? 'cluster-ports-example'
const FROM = Number(process.env.PORTS_FROM ?? 9200)
const TO = Number(process.env.PORTS_TO ?? 9203)
const WORKERS = Number(process.env.WORKERS ?? 4)

if (cluster.isPrimary) {
  let stopping = false
  const report = (message) => (process.send ? process.send(message) : console.log(message))

  cluster.on('message', (worker, message) => report({ ...message, worker: worker.id }))
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return
    report({ event: 'exit', pid: worker.process.pid, code, signal })
    cluster.fork() // the replacement
  })
  process.on('message', (message) => {
    if (message !== 'shutdown') return
    stopping = true
    cluster.disconnect(() => process.exit(0))
  })
  for (let i = 0; i < WORKERS; i++) cluster.fork()
} else {
  main().catch((error) => {
    console.error(`worker ${process.pid}: ${error.message}`)
    process.exit(1)
  })
}

async function main() {
  const pool = await PortPool.open(POOL, { from: FROM, to: TO, host: '127.0.0.1' })
  // Given back when this worker exits normally; after a crash, the pool reclaims it.
  const port = await pool.getPort()
  process.once('exit', () => pool.close({ release: true }))

  const server = http.createServer((_req, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ pid: process.pid, port }))
  })
  // exclusive: this worker's own listener, not one shared through the primary.
  server.listen({ port, host: '127.0.0.1', exclusive: true }, () => {
    process.send({ event: 'listening', pid: process.pid, port })
  })
  process.on('disconnect', () => server.close())
}
