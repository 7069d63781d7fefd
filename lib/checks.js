'use strict'
// Argument checks and coded errors, shared by every module: messages and codes follow Node's own
// (ERR_INVALID_ARG_TYPE is a TypeError, ERR_OUT_OF_RANGE a RangeError).

function codedError(Class, code, message) {
  const error = new Class(message)
  error.code = code
  return error
}

function describe(value) {
  if (value === null) return 'null'
  if (typeof value === 'bigint') return `type bigint (${value}n)`
  if (typeof value === 'string') return `type string (${JSON.stringify(value).slice(0, 40)})`
  if (typeof value === 'function') return `function ${nameOf(() => value.name) || '(anonymous)'}`
  if (typeof value === 'object') {
    const name = nameOf(() => value.constructor?.name)
    return name ? `an instance of ${name}` : 'an object'
  }
  return `type ${typeof value} (${String(value)})`
}

/**
 * A name read from a value the caller passed, or '' if there is none. Said of hostile values
 * too (a Proxy, a throwing getter): a message about an argument must not turn into the
 * argument's own exception.
 */
function nameOf(read) {
  try {
    const name = read()
    return typeof name === 'string' ? name : ''
  } catch {
    return ''
  }
}

function invalidType(name, expected, value) {
  return codedError(TypeError, 'ERR_INVALID_ARG_TYPE', `The "${name}" argument must be ${expected}. Received ${describe(value)}`)
}

function outOfRange(name, range, value) {
  return codedError(RangeError, 'ERR_OUT_OF_RANGE', `The value of "${name}" is out of range. It must be ${range}. Received ${value}`)
}

/** Checks an integer argument in [min, max]; a non-number is a TypeError, the rest RangeErrors. */
function checkInteger(name, value, min, max) {
  if (typeof value !== 'number') throw invalidType(name, 'of type number', value)
  if (!Number.isInteger(value)) throw outOfRange(name, 'an integer', value)
  if (value < min || value > max) throw outOfRange(name, `>= ${min} and <= ${max}`, value)
}

/**
 * The check that starts every method and getter of a class: `has` is the class's private-field
 * brand check (`(value) => #field in value`), so a call on anything else
 * (`SomeClass.prototype.m.call(other)`) is a coded error instead of the engine's uncoded one.
 */
function brandCheck(has, className) {
  return (self) => {
    if (typeof self !== 'object' || self === null || !has(self)) {
      throw codedError(TypeError, 'ERR_INVALID_THIS', `Value of "this" must be of type ${className}`)
    }
  }
}

/**
 * The class `Class` as exported: `new` works as on the class itself, and a call without `new` is a
 * coded error instead of the engine's uncoded TypeError.
 */
function constructOnly(Class) {
  const exported = new Proxy(Class, {
    apply() {
      throw codedError(TypeError, 'ERR_CONSTRUCT_CALL_REQUIRED', `Class constructor ${Class.name} cannot be invoked without 'new'`)
    },
  })
  // So that `instance.constructor` is what users imported (and calling it is coded too).
  Object.defineProperty(Class.prototype, 'constructor', { value: exported, writable: true, configurable: true, enumerable: false })
  return exported
}

function checkString(name, value) {
  if (typeof value !== 'string') throw invalidType(name, 'of type string', value)
}

/**
 * An options object's own properties, read once, in an object without a prototype: an option
 * never comes from `Object.prototype` (a polluted `mode` would make regions writable by anyone),
 * and a getter that answers differently each time is asked once.
 */
function checkOptions(options) {
  if (options === undefined) return Object.create(null)
  if (options === null || typeof options !== 'object') throw invalidType('options', 'of type object', options)
  return Object.assign(Object.create(null), options)
}

function checkBoolean(name, value) {
  if (typeof value !== 'boolean') throw invalidType(name, 'of type boolean', value)
}

function noFreeNumber() {
  // Go's ErrNoFreeNumber message, word for word.
  return codedError(Error, 'ERR_NO_FREE_NUMBER', 'could not allocate a free number')
}

module.exports = {
  codedError,
  describe,
  invalidType,
  outOfRange,
  checkInteger,
  checkString,
  checkOptions,
  checkBoolean,
  brandCheck,
  constructOnly,
  noFreeNumber,
}
