'use strict'
// The hot path of every allocator's allocate() and free(n) on this thread (src/hot.rs): two
// native functions shared by all allocators, and a buffer `io` that they share with us:
// io[1] is the allocator's handle id, io[0] the number to free or the number allocated (-1 when
// every number is in use).

/**
 * The same three over napi-rs functions (each call reads its arguments and makes its result
 * through Node-API, which costs more): for a runtime that allows no ArrayBuffer over an addon's
 * memory (Electron's V8 memory cage), where `native.hotPath()` returns null.
 */
function slowHotPath(native) {
  const io = new Float64Array(2)
  const allocate = () => {
    io[0] = native.allocatorAllocate(io[1])
  }
  const free = () => native.allocatorFree(io[1], io[0])
  return [allocate, free, io]
}

/** `[allocate, free, io]` for this thread. */
function hotPath(native) {
  return native.hotPath() ?? slowHotPath(native)
}

module.exports = { hotPath, slowHotPath }
