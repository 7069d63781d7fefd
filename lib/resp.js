'use strict'
// A small Redis client for the one thing RedisAllocator needs when given a URL: send a command,
// get its reply, within a bounded time. RESP2 over TCP, TLS or a Unix socket; commands are
// pipelined on one connection, replies matched in order. Users who want pools, Sentinel or
// Cluster pass their own ioredis or node-redis client instead.

const net = require('node:net')
const tls = require('node:tls')
const { codedError, invalidType } = require('./checks.js')

/** A reply the server sent as an error (`-ERR ...`): the message is the server's. */
class ReplyError extends Error {}

/** URL `text` without what could be a password (its user info). */
function redacted(text) {
  return String(text).replace(/\/\/[^/@]*@/, '//***@')
}

/** `text` for an error message: quoted, cut short, and redacted. */
function shown(text) {
  return JSON.stringify(redacted(text)).slice(0, 80)
}

/** A percent-encoded part of URL `text`, decoded; bad encoding is ERR_INVALID_URL. */
function decoded(part, text) {
  try {
    return decodeURIComponent(part)
  } catch {
    throw codedError(TypeError, 'ERR_INVALID_URL', `bad percent-encoding in the Redis URL ${shown(text)}`)
  }
}

/**
 * Reads `redis://[user:password@]host[:port][/db]`, `rediss://` (TLS) or
 * `unix:///path/to/socket[?db=N]` (also `redis+unix://`); throws ERR_INVALID_URL otherwise.
 */
function parseUrl(text) {
  let url
  try {
    url = new URL(text)
  } catch {
    throw codedError(TypeError, 'ERR_INVALID_URL', `not a Redis URL: ${shown(text)}`)
  }
  const user = url.username ? decoded(url.username, text) : null
  const password = url.password ? decoded(url.password, text) : null
  if (user !== null && password === null) {
    // Clients read `redis://bob@host` three ways: redis-cli as the password "bob", ioredis as
    // user bob with an empty password, node-redis (RESP3) as no credentials at all. Whichever
    // we picked, the same URL would log in as someone else in another client.
    throw codedError(
      TypeError,
      'ERR_INVALID_URL',
      `a Redis URL with a user needs a password too (redis://user:password@host; an ACL user with nopass takes any). Received ${shown(text)}`,
    )
  }
  let db = url.searchParams.get('db')
  const where = { user, password, tls: false }
  switch (url.protocol) {
    case 'redis:':
    case 'rediss:': {
      if (!url.hostname) throw codedError(TypeError, 'ERR_INVALID_URL', `no host in the Redis URL ${shown(text)}`)
      where.host = url.hostname.replace(/^\[(.*)\]$/, '$1')
      where.port = url.port ? Number(url.port) : 6379
      where.tls = url.protocol === 'rediss:'
      const path = url.pathname.replace(/^\//, '')
      if (path !== '') db = path
      break
    }
    case 'unix:':
    case 'redis+unix:':
      if (!url.pathname) throw codedError(TypeError, 'ERR_INVALID_URL', `no socket path in the Redis URL ${shown(text)}`)
      // unix://relative/sock would read as the host "relative" and the path /sock.
      if (url.hostname !== '' && url.hostname !== 'localhost') {
        throw codedError(TypeError, 'ERR_INVALID_URL', `a unix:// URL names an absolute path (unix:///path/to/redis.sock). Received ${shown(text)}`)
      }
      where.path = decoded(url.pathname, text)
      break
    default:
      throw codedError(TypeError, 'ERR_INVALID_URL', `a Redis URL starts with redis://, rediss:// or unix://. Received ${shown(text)}`)
  }
  if (db !== null) {
    if (!/^\d{1,5}$/.test(db)) throw codedError(TypeError, 'ERR_INVALID_URL', `the database in a Redis URL is a number. Received ${JSON.stringify(db)}`)
    where.db = Number(db)
  }
  return where
}

function encode(args) {
  let out = `*${args.length}\r\n`
  for (const arg of args) {
    const text = String(arg)
    out += `$${Buffer.byteLength(text)}\r\n${text}\r\n`
  }
  return out
}

const INCOMPLETE = Symbol('incomplete')
/** The longest delay Node's timers take: a longer one fires after 1 ms instead. */
const MAX_TIMER_MS = 2 ** 31 - 1
/** How many timed-out commands may wait for their replies before the connection is made again. */
const MAX_ABANDONED = 64

/**
 * Parses one reply from `buffer` at `start`: [value, end] or INCOMPLETE. Bulk strings come back
 * as strings, integers as numbers, errors as ReplyError values (not thrown), nil as null.
 */
function parse(buffer, start) {
  const eol = buffer.indexOf('\r\n', start)
  if (eol < 0) return INCOMPLETE
  const type = buffer[start]
  const line = buffer.toString('utf8', start + 1, eol)
  const next = eol + 2
  switch (type) {
    case 0x2b: // +
      return [line, next]
    case 0x2d: // -
      return [new ReplyError(line), next]
    case 0x3a: // :
      return [Number(line), next]
    case 0x24: {
      // $
      const length = Number(line)
      if (length < 0) return [null, next]
      if (buffer.length < next + length + 2) return INCOMPLETE
      return [buffer.toString('utf8', next, next + length), next + length + 2]
    }
    case 0x2a: {
      // *
      const count = Number(line)
      if (count < 0) return [null, next]
      const items = []
      let at = next
      for (let i = 0; i < count; i++) {
        const item = parse(buffer, at)
        if (item === INCOMPLETE) return INCOMPLETE
        items.push(item[0])
        at = item[1]
      }
      return [items, at]
    }
    default:
      throw new Error(`unexpected reply type ${JSON.stringify(String.fromCharCode(type))}`)
  }
}

/**
 * One connection, opened on the first command and again after it breaks. Every command is
 * answered or fails within `timeoutMs`. A command that times out fails with ERR_REDIS_TIMEOUT
 * but keeps its place in the line, so that its reply, if it comes, is dropped rather than taken
 * for the next command's (and the connection, and the commands behind it, go on); past
 * MAX_ABANDONED such places the connection is dropped and made again. A broken connection fails
 * every command waiting with ERR_REDIS_UNAVAILABLE. The socket keeps the process alive only
 * while a command waits.
 */
class RespClient {
  #where
  #timeoutMs
  #socket = null
  #ready = null // a promise settled when the connection is usable
  #waiting = [] // { resolve, reject, timer, abandoned } in the order the commands were sent
  #abandoned = 0 // how many of #waiting timed out
  #input = Buffer.alloc(0)
  #closed = false

  constructor(url, timeoutMs) {
    if (typeof url !== 'string') throw invalidType('url', 'of type string', url)
    this.#where = parseUrl(url)
    this.#timeoutMs = Math.min(timeoutMs, MAX_TIMER_MS)
  }

  /** Sends `args` (a command and its arguments) and resolves with the reply. */
  async call(args) {
    if (this.#closed) throw codedError(Error, 'ERR_REGION_CLOSED', 'the Redis connection is closed')
    if (this.#socket === null) this.#connect()
    const socket = this.#socket
    await this.#ready
    if (socket !== this.#socket || socket === null) {
      throw codedError(Error, 'ERR_REDIS_UNAVAILABLE', 'the connection to Redis broke before the command was sent')
    }
    return this.#send(args)
  }

  #send(args) {
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject }
      this.#waiting.push(entry)
      this.#socket.ref()
      entry.timer = setTimeout(() => {
        entry.abandoned = true
        entry.reject(codedError(Error, 'ERR_REDIS_TIMEOUT', `Redis did not answer within ${this.#timeoutMs} ms (the command may have run)`))
        if (++this.#abandoned > MAX_ABANDONED) {
          this.#fail(codedError(Error, 'ERR_REDIS_UNAVAILABLE', `Redis left ${MAX_ABANDONED} commands unanswered: the connection was made again`))
        } else if (this.#abandoned === this.#waiting.length) {
          // Nobody waits any more: a reply that may never come keeps no process alive.
          this.#socket.unref()
        }
      }, this.#timeoutMs)
      this.#socket.write(encode(args))
    }).then((reply) => {
      if (reply instanceof ReplyError) throw reply
      return reply
    })
  }

  #connect() {
    const where = this.#where
    const options = where.path !== undefined ? { path: where.path } : { host: where.host, port: where.port }
    const socket = where.tls ? tls.connect({ ...options, servername: net.isIP(where.host) ? undefined : where.host }) : net.connect(options)
    this.#socket = socket
    this.#input = Buffer.alloc(0)
    socket.setNoDelay?.(true)
    socket.unref()
    socket.on('data', (chunk) => this.#receive(chunk))
    socket.on('error', (error) => {
      const failure = codedError(Error, 'ERR_REDIS_UNAVAILABLE', `cannot reach Redis: ${error.message}`)
      failure.cause = error
      this.#fail(failure, socket)
    })
    socket.on('close', () => this.#fail(codedError(Error, 'ERR_REDIS_UNAVAILABLE', 'the connection to Redis closed (a command sent may have run)'), socket))
    const connected = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(codedError(Error, 'ERR_REDIS_TIMEOUT', `could not connect to Redis within ${this.#timeoutMs} ms`))
        socket.destroy()
      }, this.#timeoutMs)
      socket.once(where.tls ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer)
        resolve()
      })
      let cause = null
      socket.once('error', (error) => (cause = error))
      socket.once('close', () => {
        clearTimeout(timer)
        // Why, when the socket said (refused, no such file, a certificate not trusted, ...).
        const why = cause ? `: ${cause.message}` : ''
        const error = codedError(Error, 'ERR_REDIS_UNAVAILABLE', `cannot reach Redis at ${where.path ?? `${where.host}:${where.port}`}${why}`)
        if (cause) error.cause = cause
        reject(error)
      })
    })
    this.#ready = connected.then(async () => {
      try {
        if (where.password !== null) await this.#send(where.user !== null ? ['AUTH', where.user, where.password] : ['AUTH', where.password])
        if (where.db !== undefined && where.db !== 0) await this.#send(['SELECT', where.db])
      } catch (error) {
        // A connection that is up but not logged in or not in its database is of no use, and
        // its failed promise would fail every later command: the next command connects anew.
        this.#fail(error, socket)
        throw error
      }
    })
    // A connection that fails is reported by the command that waits for it; never unhandled.
    this.#ready.catch(() => {})
  }

  #receive(chunk) {
    this.#input = this.#input.length === 0 ? chunk : Buffer.concat([this.#input, chunk])
    let at = 0
    for (;;) {
      let parsed
      try {
        parsed = parse(this.#input, at)
      } catch (error) {
        this.#fail(codedError(Error, 'ERR_REDIS_UNAVAILABLE', `Redis sent something that is not RESP: ${error.message}`))
        return
      }
      if (parsed === INCOMPLETE) break
      at = parsed[1]
      const entry = this.#waiting.shift()
      if (entry === undefined) {
        this.#fail(codedError(Error, 'ERR_REDIS_UNAVAILABLE', 'Redis sent a reply to no command'))
        return
      }
      clearTimeout(entry.timer)
      if (entry.abandoned) this.#abandoned--
      else entry.resolve(parsed[0])
    }
    this.#input = at === this.#input.length ? Buffer.alloc(0) : this.#input.subarray(at)
    if (this.#waiting.length === this.#abandoned) this.#socket?.unref()
  }

  /** Fails every waiting command with `error` and drops the connection (if still `socket`). */
  #fail(error, socket = this.#socket) {
    if (socket !== this.#socket) return
    const waiting = this.#waiting
    this.#waiting = []
    this.#abandoned = 0
    this.#socket = null
    this.#ready = null
    socket?.destroy()
    for (const entry of waiting) {
      clearTimeout(entry.timer)
      entry.reject(error)
    }
  }

  /** Closes the connection; waiting commands fail with ERR_REDIS_UNAVAILABLE. */
  close() {
    this.#closed = true
    this.#fail(codedError(Error, 'ERR_REDIS_UNAVAILABLE', 'the Redis connection was closed'))
  }
}

module.exports = { RespClient, ReplyError, parseUrl, redacted, MAX_TIMER_MS }
