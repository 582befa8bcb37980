'use strict'
// Shared helpers for the interop scripts: argument parsing, one-JSON-line
// output, a hard overall timeout, and building a client plugin (BTP or
// ILP-over-HTTP) from the command line. Diagnostics go to stderr; stdout only
// ever carries JSON lines so the Rust tests can parse it.

const crypto = require('crypto')
const IlpPacket = require('ilp-packet')

// Parses `--key value` pairs (and bare `--flag`) into an object.
function parseArgs (argv = process.argv.slice(2)) {
  const out = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (!a.startsWith('--')) fail(`unexpected argument ${JSON.stringify(a)}`)
    const key = a.slice(2)
    const next = argv[i + 1]
    if (next === undefined || next.startsWith('--')) {
      out[key] = true
    } else {
      out[key] = next
      i++
    }
  }
  return out
}

// Prints one JSON object as one line on stdout.
function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

// Prints the error as JSON on stdout and a human message on stderr, then
// exits 1. Used for every failure of the script itself.
function fail (message, extra = {}) {
  const msg = message instanceof Error ? (message.stack || message.message) : String(message)
  process.stderr.write(`${scriptName()}: error: ${msg}\n`)
  emit(Object.assign({ error: message instanceof Error ? message.message : String(message) }, extra))
  process.exit(1)
}

function scriptName () {
  return require('path').basename(process.argv[1] || 'script')
}

// Arms the overall timeout: no script may hang a test. Seconds from
// `--timeout`, else `defaultSeconds`.
function armTimeout (args, defaultSeconds, onTimeout) {
  const seconds = Number(args.timeout || defaultSeconds)
  if (!(seconds > 0)) fail(`bad --timeout ${args.timeout}`)
  const t = setTimeout(() => {
    if (onTimeout) {
      try { onTimeout() } catch (e) { /* still fail below */ }
    }
    fail(`overall timeout of ${seconds} s reached`)
  }, seconds * 1000)
  return t
}

// Every unexpected rejection or exception is a script failure, not a hang.
function installCrashHandlers () {
  process.on('unhandledRejection', (e) => fail(e instanceof Error ? e : new Error(String(e))))
  process.on('uncaughtException', (e) => fail(e))
}

function required (args, key) {
  const v = args[key]
  if (v === undefined || v === true) fail(`missing --${key}`)
  return v
}

// Builds the client-side plugin:
//   --btp ws://user:token@127.0.0.1:PORT          (ilp-plugin-btp client)
//   --http URL --token T [--listen-port P --listen-token T2] (ilp-plugin-http)
// The HTTP plugin always runs a server for incoming packets; it binds
// 127.0.0.1 (a free port unless --listen-port is given).
function makePlugin (args) {
  if (args.btp) {
    const BtpPlugin = require('ilp-plugin-btp')
    // ilp-plugin-btp insists on the btp+ws:// spelling; accept ws:// too.
    let server = String(args.btp)
    if (/^wss?:\/\//.test(server)) server = 'btp+' + server
    assertLoopback(server)
    return new BtpPlugin({
      server,
      responseTimeout: Number(args['response-timeout-ms'] || 35000)
    })
  }
  if (args.http) {
    const HttpPlugin = require('ilp-plugin-http')
    const url = String(args.http)
    assertLoopback(url)
    return new HttpPlugin({
      incoming: {
        // Koa's listen() hands its arguments to http.Server#listen, which
        // accepts an options object: this is how we bind 127.0.0.1.
        port: { port: Number(args['listen-port'] || 0), host: '127.0.0.1' },
        staticToken: String(args['listen-token'] || crypto.randomBytes(16).toString('hex'))
      },
      outgoing: {
        url,
        staticToken: String(required(args, 'token')),
        name: String(args['peer-name'] || 'interop')
      }
    })
  }
  fail('one of --btp URL or --http URL is required')
}

function assertLoopback (url) {
  let host
  try {
    host = new URL(url.replace(/^btp\+/, '')).hostname
  } catch (e) {
    fail(`bad URL ${url}: ${e.message}`)
  }
  if (host !== '127.0.0.1' && host !== 'localhost') {
    fail(`refusing non-loopback address ${host}: tests use 127.0.0.1 only`)
  }
}

// Connects the plugin with a bounded wait (ilp-plugin-btp retries a refused
// connection forever): `--connect-timeout-ms`, default 10 s.
async function connectPlugin (plugin, args = {}) {
  const ms = Number(args['connect-timeout-ms'] || 10000)
  await withTimeout(plugin.connect(), ms, `plugin did not connect within ${ms} ms`)
}

function withTimeout (promise, ms, message) {
  let t
  return Promise.race([
    promise,
    new Promise((resolve, reject) => {
      t = setTimeout(() => reject(new Error(message)), ms)
    })
  ]).finally(() => clearTimeout(t))
}

// Decodes an ILP reply into a JSON-friendly object (data as hex).
function describeReply (reply) {
  const type = reply[0]
  if (type === IlpPacket.Type.TYPE_ILP_FULFILL) {
    const f = IlpPacket.deserializeIlpFulfill(reply)
    return { type: 'fulfill', fulfillment: f.fulfillment.toString('hex'), data: f.data.toString('hex') }
  }
  if (type === IlpPacket.Type.TYPE_ILP_REJECT) {
    const r = IlpPacket.deserializeIlpReject(reply)
    return {
      type: 'reject',
      code: r.code,
      triggeredBy: r.triggeredBy,
      message: r.message,
      data: r.data.toString('hex')
    }
  }
  return { type: 'unknown', hex: reply.toString('hex') }
}

// RFC 31 "Packet": peer protocols use the all-zero fulfillment.
const PEER_PROTOCOL_FULFILLMENT = Buffer.alloc(32)
const PEER_PROTOCOL_CONDITION = sha256(PEER_PROTOCOL_FULFILLMENT)

function sha256 (buf) {
  return crypto.createHash('sha256').update(buf).digest()
}

// Exits after giving stdout a moment to flush (process.exit can truncate
// piped output otherwise).
function exitAfterFlush (code) {
  process.stdout.write('', () => process.exit(code))
}

module.exports = {
  parseArgs,
  emit,
  fail,
  armTimeout,
  installCrashHandlers,
  required,
  makePlugin,
  connectPlugin,
  withTimeout,
  describeReply,
  sha256,
  exitAfterFlush,
  PEER_PROTOCOL_FULFILLMENT,
  PEER_PROTOCOL_CONDITION
}
