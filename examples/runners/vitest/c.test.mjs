// Each test file gets a port of its own, in a fork or a worker thread alike.
import { test, expect } from 'vitest'
import { createRequire } from 'node:module'

const { serve } = createRequire(import.meta.url)('../serve.js')

test('c serves on a port of its own', async () => {
  const server = await serve('c')
  try {
    expect(await server.get()).toBe(`c on ${server.port}`)
  } finally {
    await server.close()
  }
})
