'use strict'
// The hot path of allocate() and free(n) (src/hot.rs): two native functions, shared by the
// allocators of this thread or bound to one, and a buffer `io` that they share with us: io[1] is
// the allocator's handle id (unless bound), io[0] the number to free or the number allocated (-1
// when every number is in use).

/**
 * The same three over napi-rs functions (each call reads its arguments and makes its result
 * through Node-API, which costs more): for a runtime that allows no ArrayBuffer over an addon's
 * memory (Electron's V8 memory cage), where `native.hotPath()` returns null.
 */
function slowHotPath(native, boundTo) {
  const io = new Float64Array(2)
  // Only a whole number in u32's range is an id (the binding would wrap -1 to 2^32 - 1, which no
  // handle has, but 2^32 + k to k).
  const id = () => {
    const id = boundTo ?? io[1]
    return id >>> 0 === id ? id : 2 ** 32 - 1
  }
  const allocate = () => {
    io[0] = native.allocatorAllocate(id())
  }
  const free = () => native.allocatorFree(id(), io[0])
  return [allocate, free, io]
}

/** `[allocate, free, io]` for every allocator of this thread, or bound to the allocator `boundTo`. */
function hotPath(native, boundTo) {
  return native.hotPath(boundTo) ?? slowHotPath(native, boundTo)
}

module.exports = { hotPath, slowHotPath }
