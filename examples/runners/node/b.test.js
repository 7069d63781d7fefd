'use strict'
// node --test --test-concurrency=3 examples/runners/node/
const test = require('node:test')
const assert = require('node:assert/strict')
const { serve } = require('../serve.js')

test('b serves on a port of its own', async () => {
  const server = await serve('b')
  try {
    assert.equal(await server.get(), `b on ${server.port}`)
  } finally {
    await server.close()
  }
})
