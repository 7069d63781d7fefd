'use strict'
// numballoc's main job in one run (`npm start`): a node:cluster app whose workers each take a
// port and a dense worker ID, serve on the port, and lose both to nobody else. The primary kills
// one worker with SIGKILL, forks a replacement, and shows that it gets an ID and a port back
// (the dead worker's ID: the lowest free one, reclaimed when the replacement opened the region).
// It prints who holds what and the occupancy picture of `numballoc inspect`, then shuts down and
// leaves nothing behind.
//
// Settings (environment): DEMO_NAME (prefix of the two regions, default 'numballoc-demo'),
// DEMO_PORTS (first port of 16, default 9300), DEMO_WORKERS (default 3).

const cluster = require('node:cluster')
const http = require('node:http')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { ConcurrentBitmap, PortPool, destroyShared, inspectShared } = require('..')

const NAME = process.env.DEMO_NAME ?? 'numballoc-demo'
const IDS = `${NAME}-ids`
const PORTS = `${NAME}-ports`
const FROM = Number(process.env.DEMO_PORTS ?? 9300)
const WORKERS = Number(process.env.DEMO_WORKERS ?? 3)

if (cluster.isPrimary) {
  primary().catch((error) => {
    console.error(`demo: ${error.stack}`)
    process.exit(1)
  })
} else {
  worker().catch((error) => {
    console.error(`worker ${process.pid}: ${error.message}`)
    process.exit(1)
  })
}

async function worker() {
  const ids = ConcurrentBitmap.open(IDS, { capacity: 16, policy: 'lowest' })
  const id = ids.allocate()
  const pool = await PortPool.open(PORTS, { from: FROM, to: FROM + 15, host: '127.0.0.1' })
  const port = await pool.getPort()
  const server = http.createServer((_req, res) => res.end(JSON.stringify({ id, port, pid: process.pid })))
  // exclusive: this worker's own listener, not one shared through the primary.
  server.listen({ port, host: '127.0.0.1', exclusive: true }, () => process.send({ ready: { id, port, pid: process.pid } }))
  // A worker that ends normally gives its ID and port back by itself.
  process.on('disconnect', () => server.close())
}

function get(port) {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, agent: false }, (res) => {
        let body = ''
        res.on('data', (chunk) => (body += chunk))
        res.on('end', () => resolve(JSON.parse(body)))
      })
      .on('error', reject)
  })
}

async function primary() {
  // A fresh start: regions a previous run left (if it was killed) are removed first.
  destroyShared(IDS)
  destroyShared(PORTS)
  const workers = new Map() // pid -> { id, port, pid }
  const nextReady = () => new Promise((resolve) => cluster.once('message', (w, m) => m.ready && resolve(m.ready)))
  const start = async () => {
    const ready = nextReady()
    cluster.fork()
    const info = await ready
    workers.set(info.pid, info)
    return info
  }
  for (let i = 0; i < WORKERS; i++) await start()
  await show(workers, 'workers are up')

  const victim = [...workers.values()].find((w) => w.id === 1) ?? [...workers.values()][0]
  const died = new Promise((resolve) => cluster.once('exit', (w, code, signal) => resolve(signal)))
  process.kill(victim.pid, 'SIGKILL')
  console.log(`\nkilled worker ${victim.pid} (ID ${victim.id}, port ${victim.port}) with ${await died}`)
  workers.delete(victim.pid)
  const replacement = await start()
  console.log(`replacement ${replacement.pid} got ID ${replacement.id} and port ${replacement.port}`)
  await show(workers, 'after the replacement')

  // Workers end normally once disconnected, giving back their IDs and ports as they exit.
  const exits = Object.values(cluster.workers).map((w) => new Promise((resolve) => w.once('exit', resolve)))
  cluster.disconnect()
  await Promise.all(exits)
  const left = { ids: inspectShared(IDS).inUse, ports: inspectShared(PORTS).inUse }
  destroyShared(IDS)
  destroyShared(PORTS)
  console.log(`\nshut down: the workers gave back their IDs (${left.ids} left) and ports (${left.ports} left); both regions removed`)
  console.log(`summary ${JSON.stringify({ victim, replacement, left })}`)
}

/** Prints who holds what (each worker answering on its port) and `numballoc inspect` of the IDs. */
async function show(workers, title) {
  console.log(`\n${title}:\n  PID      ID  PORT   ANSWERS`)
  for (const w of [...workers.values()].sort((a, b) => a.id - b.id)) {
    const answer = await get(w.port)
    console.log(`  ${String(w.pid).padEnd(8)} ${String(w.id).padEnd(3)} ${String(w.port).padEnd(6)} ${JSON.stringify(answer)}`)
  }
  const bin = path.join(__dirname, '..', 'bin', 'numballoc.js')
  const inspect = spawnSync(process.execPath, [bin, 'inspect', IDS, '--cells', '16'], { encoding: 'utf8' })
  console.log(`\n$ numballoc inspect ${IDS} --cells 16\n${inspect.stdout.trimEnd()}`)
}
