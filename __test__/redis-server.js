'use strict'
// A real redis-server for the tests: started in a directory of its own, on a Unix socket (and a
// loopback port when asked), with nothing saved unless `appendonly` is asked; stopped when the
// test ends, pass or fail. Found as `redis-server` or `valkey-server` on the PATH, or
// $NUMBALLOC_REDIS_SERVER; .ci/run installs Debian's redis-server when none is there.
const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

function serverBinary() {
  if (process.env.NUMBALLOC_REDIS_SERVER) return process.env.NUMBALLOC_REDIS_SERVER
  for (const name of ['redis-server', 'valkey-server']) {
    try {
      execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'pipe' })
      return name
    } catch {
      // Not this one.
    }
  }
  throw new Error(
    'the Redis tests need a redis-server (or valkey-server) on the PATH: `apt-get install redis-server` ' +
      '(Debian, Ubuntu), `brew install redis` (macOS), or set NUMBALLOC_REDIS_SERVER to its path',
  )
}

/** Resolves once something accepts connections at `where` ({ path } or { port }). */
async function reachable(where, child) {
  const started = Date.now()
  for (;;) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}`)
    const ok = await new Promise((resolve) => {
      const socket = net.connect(where)
      socket.once('connect', () => {
        socket.end('PING\r\n')
        resolve(true)
      })
      socket.once('error', () => resolve(false))
    })
    if (ok) return
    if (Date.now() - started > 20_000) throw new Error(`redis-server did not listen within 20 s at ${JSON.stringify(where)}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** Resolves once a replica of the primary at `url` confirms its writes. */
async function synced(url) {
  const { RespClient } = require('../lib/resp.js')
  const client = new RespClient(url, 5000)
  try {
    for (let i = 0; ; i++) {
      // A write that one replica confirms: the replica is in step.
      await client.call(['SET', 'numballoc-test-synced', String(i)])
      if ((await client.call(['WAIT', '1', '100'])) >= 1) return
      if (i > 200) throw new Error(`the replica did not confirm a write within 20 s:\n${await client.call(['INFO', 'replication'])}`)
    }
  } finally {
    client.close()
  }
}

/** A free loopback port (the kernel's choice; released before the server takes it). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

/**
 * Starts a redis-server for test `t` (or, with `t` null, for the caller to stop). `options`:
 * `appendonly` (AOF with fsync on every write), `tcp` (also listen on a loopback port),
 * `tls` (also listen with TLS, a certificate for localhost signed by `caFile`), `password`
 * (clients must AUTH with it; `url` then carries it), `replicaOf`
 * (another server of this file: start as its replica). Resolves with `url` (the
 * Unix socket), `tcpUrl`, `port`, `dir`, `stop()`, `kill9()` and `restart()` (same directory,
 * socket and port, so an AOF is read back).
 */
async function startRedis(t, { appendonly = false, tcp = false, replicaOf = null, tls = false, password = null } = {}) {
  const binary = serverBinary()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'numballoc-redis-'))
  const socket = path.join(dir, 'redis.sock')
  const port = tcp || replicaOf ? await freePort() : 0
  const tlsPort = tls ? await freePort() : 0
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--unixsocket',
    socket,
    '--unixsocketperm',
    '700',
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    appendonly ? 'yes' : 'no',
    '--appendfsync',
    'always',
    '--daemonize',
    'no',
    '--loglevel',
    'warning',
    '--logfile',
    path.join(dir, 'redis.log'),
  ]
  // Without a delay before the first sync: a replica is in step in milliseconds, not seconds.
  if (tls) {
    // A certificate authority of the test's own, and a certificate for localhost it signed.
    const { execFileSync } = require('node:child_process')
    const ssl = (...more) => execFileSync('openssl', more, { cwd: dir, stdio: 'pipe' })
    ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=numballoc test CA')
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost')
    fs.writeFileSync(path.join(dir, 'ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1')
    ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'ext')
    args.push(
      '--tls-port',
      String(tlsPort),
      '--tls-cert-file',
      'server.crt',
      '--tls-key-file',
      'server.key',
      '--tls-ca-cert-file',
      'ca.crt',
      '--tls-auth-clients',
      'no',
    )
  }
  if (password !== null) args.push('--requirepass', password)
  if (replicaOf) args.push('--replicaof', '127.0.0.1', String(replicaOf.port), '--repl-diskless-sync-delay', '0')
  else args.push('--repl-diskless-sync-delay', '0')
  let child = null
  const launch = async () => {
    child = spawn(binary, args, { stdio: 'ignore' })
    child.on('error', () => {})
    await reachable({ path: socket }, child)
  }
  const server = {
    url: password === null ? `unix://${socket}` : `unix://:${encodeURIComponent(password)}@localhost${socket}`,
    tcpUrl: port ? `redis://${password === null ? '' : `:${encodeURIComponent(password)}@`}127.0.0.1:${port}` : null,
    tlsUrl: tls ? `rediss://localhost:${tlsPort}` : null,
    caFile: tls ? path.join(dir, 'ca.crt') : null,
    port,
    dir,
    get pid() {
      return child.pid
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      await new Promise((resolve) => {
        child.once('exit', resolve)
        child.kill('SIGTERM')
        // A server a test left stopped (SIGSTOP) acts on SIGTERM once continued.
        child.kill('SIGCONT')
      })
    },
    async kill9() {
      if (child.exitCode !== null || child.signalCode !== null) return
      await new Promise((resolve) => {
        child.once('exit', resolve)
        child.kill('SIGKILL')
      })
    },
    async restart() {
      await server.stop()
      await launch()
    },
    log() {
      return fs.readFileSync(path.join(dir, 'redis.log'), 'utf8')
    },
  }
  await launch()
  if (replicaOf) await synced(replicaOf.url)
  const cleanup = async () => {
    await server.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  }
  if (t) t.after(cleanup)
  else server.cleanup = cleanup
  return server
}

/**
 * A Unix socket in front of `server` that holds every byte Redis sends back for `delayMs`: a
 * slow network, for test `t`. Resolves with its `url`.
 */
async function slowProxy(t, server, delayMs) {
  const socketPath = path.join(server.dir, `slow-${delayMs}.sock`)
  const sockets = new Set()
  const proxy = net.createServer((client) => {
    const upstream = net.connect({ path: path.join(server.dir, 'redis.sock') })
    for (const each of [client, upstream]) {
      sockets.add(each)
      each.on('error', () => {})
      each.on('close', () => [client, upstream].forEach((other) => other.destroy()))
    }
    client.on('data', (chunk) => upstream.write(chunk))
    upstream.on('data', (chunk) => setTimeout(() => client.writable && client.write(chunk), delayMs))
  })
  await new Promise((resolve) => proxy.listen(socketPath, resolve))
  t.after(() => {
    for (const each of sockets) each.destroy()
    return new Promise((resolve) => proxy.close(resolve))
  })
  return { url: `unix://${socketPath}` }
}

/**
 * A Redis Cluster of three masters on loopback ports, for test `t` (made with `redis-cli
 * --cluster create`, which comes with redis-server). Resolves with the `ports`.
 */
async function startCluster(t) {
  const { execFile } = require('node:child_process')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'numballoc-cluster-'))
  const ports = [await freePort(), await freePort(), await freePort()]
  const children = ports.map((port) => {
    const nodeDir = path.join(dir, String(port))
    fs.mkdirSync(nodeDir)
    const child = spawn(
      serverBinary(),
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        'nodes.conf',
        '--dir',
        nodeDir,
        '--save',
        '',
        '--appendonly',
        'no',
        '--logfile',
        'redis.log',
      ],
      { stdio: 'ignore' },
    )
    child.on('error', () => {})
    return child
  })
  t.after(async () => {
    await Promise.all(children.map((child) => child.exitCode === null && new Promise((resolve) => child.once('exit', resolve).kill('SIGTERM'))))
    fs.rmSync(dir, { recursive: true, force: true })
  })
  for (const [i, port] of ports.entries()) await reachable({ port, host: '127.0.0.1' }, children[i])
  const cli = serverBinary().replace(/(redis|valkey)-server$/, '$1-cli')
  await new Promise((resolve, reject) =>
    execFile(cli, ['--cluster', 'create', ...ports.map((port) => `127.0.0.1:${port}`), '--cluster-yes'], (error, stdout) =>
      error ? reject(new Error(`${cli} --cluster create failed: ${error.message}\n${stdout}`)) : resolve(),
    ),
  )
  // Until every node knows the whole slot map.
  const { RespClient } = require('../lib/resp.js')
  for (const port of ports) {
    const client = new RespClient(`redis://127.0.0.1:${port}`, 5000)
    try {
      for (let i = 0; !/cluster_state:ok/.test(await client.call(['CLUSTER', 'INFO'])); i++) {
        if (i > 400) throw new Error('the cluster did not come up within 20 s')
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    } finally {
      client.close()
    }
  }
  return { ports }
}

module.exports = { startRedis, slowProxy, startCluster }
