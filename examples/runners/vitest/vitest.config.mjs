// npx vitest run --config examples/runners/vitest/vitest.config.mjs --pool=forks (or threads)
import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['examples/runners/vitest/*.test.mjs'],
    // numballoc is a native addon: load it with Node's own loader, as it is from node_modules.
    server: { deps: { external: [/numballoc/, /serve\.js$/] } },
  },
})
