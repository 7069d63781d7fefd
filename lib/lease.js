'use strict'

const { codedError, brandCheck, constructOnly } = require('./checks.js')

const constructing = Symbol('numballoc lease')

/** A number held until released: `using port = pool.acquire()` releases it at scope exit. */
let ownLease // (self) => throws ERR_INVALID_THIS unless self is a Lease; set in its static block
class Lease {
  #value
  #free
  #released = false

  static {
    ownLease = brandCheck((value) => #value in value, 'Lease')
  }

  constructor(token, value, free) {
    if (token !== constructing) {
      throw codedError(TypeError, 'ERR_ILLEGAL_CONSTRUCTOR', 'use acquire() of an allocator or a port pool to get a Lease')
    }
    this.#value = value
    this.#free = free
  }

  get value() {
    ownLease(this)
    return this.#value
  }

  get released() {
    ownLease(this)
    return this.#released
  }

  release() {
    ownLease(this)
    if (this.#released) {
      throw codedError(Error, 'ERR_LEASE_RELEASED', `the lease of ${this.#value} was already released`)
    }
    // Marked first, so that a release reached again from inside this one is refused; unmarked
    // if the number did not go back, so that the caller can try again.
    this.#released = true
    try {
      this.#free(this.#value)
    } catch (error) {
      this.#released = false
      throw error
    }
  }

  [Symbol.dispose]() {
    ownLease(this)
    if (!this.#released) this.release()
  }

  get [Symbol.toStringTag]() {
    return 'Lease'
  }
}

/** A lease of `value`, given back by calling `free(value)` once. */
function createLease(value, free) {
  return new Lease(constructing, value, free)
}

module.exports = { Lease: constructOnly(Lease), createLease }
