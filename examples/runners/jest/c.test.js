'use strict'
// Each test file runs in a Jest worker of its own and gets a port of its own.
const { serve } = require('../serve.js')

test('c serves on a port of its own', async () => {
  const server = await serve('c')
  try {
    expect(await server.get()).toBe(`c on ${server.port}`)
  } finally {
    await server.close()
  }
})
