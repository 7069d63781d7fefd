'use strict'
// Each test file runs in a Jest worker of its own and gets a port of its own.
const { serve } = require('../serve.js')

test('b serves on a port of its own', async () => {
  const server = await serve('b')
  try {
    expect(await server.get()).toBe(`b on ${server.port}`)
  } finally {
    await server.close()
  }
})
