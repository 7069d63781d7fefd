'use strict'
// What each example test file does: take a port of its own from numballoc, serve on it, ask the
// server something, give the port back. Two test runs at once on one machine never collide.
const http = require('node:http')
const { getPort, releasePort } = require('numballoc')

/** Starts an HTTP server on a port from numballoc; resolves to { port, get(path), close() }. */
async function serve(name) {
  const port = await getPort()
  const server = http.createServer((request, response) => response.end(`${name} on ${port}`))
  await new Promise((resolve, reject) => {
    server.once('error', reject) // EADDRINUSE would land here, and fail the test
    server.listen(port, resolve)
  })
  return {
    port,
    get: async (path = '/') => (await fetch(`http://127.0.0.1:${port}${path}`)).text(),
    close: async () => {
      await new Promise((resolve) => server.close(resolve))
      releasePort(port)
    },
  }
}

module.exports = { serve }
