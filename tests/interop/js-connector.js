'use strict'
// js-connector.js --config FILE.json [--timeout S (600)] [--no-stdin]
// Runs the JavaScript reference connector (ilp-connector 23) in-process, with
// every listener on 127.0.0.1, rateLimit disabled, store "memory", backend
// "one-to-one" with spread 0. Prints {"ready": true, ...} once its listeners
// accept connections; stops on SIGTERM/SIGINT or when stdin closes (unless
// --no-stdin), printing {"stopped": true}. Its own logs go to stderr
// (DEBUG=connector* for more).
//
// Config file (JSON):
// {
//   "ilpAddress": "test.jsc",                 // required
//   "accounts": {
//     "<id>": {
//       "relation": "child" | "peer" | "parent",
//       "assetCode": "USD", "assetScale": 9,   // defaults
//       // exactly one transport:
//       "btpServer": { "port": 7001, "token": "alice-token" },
//       "btpClient": "btp+ws://user:token@127.0.0.1:7002"
//                    | { "url": "btp+ws://127.0.0.1:7002", "username": "u", "token": "t" },
//       "http": { "port": 7003, "incomingToken": "in", "url": "http://127.0.0.1:7004/ilp",
//                 "outgoingToken": "out", "name": "jsc" },
//       // anything else (balance, maxPacketAmount, sendRoutes, receiveRoutes,
//       // ilpAddressSegment, ...) is passed to ilp-connector unchanged
//     }
//   },
//   "connector": { ... }  // extra ilp-connector options, merged last
// }
const net = require('net')
const fs = require('fs')
const lib = require('./lib')

function buildAccount (id, acc) {
  const { btpServer, btpClient, http, ...rest } = acc
  const out = Object.assign({ relation: 'child', assetCode: 'USD', assetScale: 9 }, rest)
  const transports = [btpServer, btpClient, http].filter((t) => t !== undefined)
  if (transports.length !== 1) lib.fail(`account ${id}: give exactly one of btpServer, btpClient, http`)
  if (btpServer) {
    const port = Number(btpServer.port)
    out.plugin = 'ilp-plugin-btp'
    // wsOpts goes straight to ws.Server: host pins the listener to loopback.
    out.options = { listener: { port, secret: String(btpServer.token), wsOpts: { host: '127.0.0.1', port } } }
  } else if (btpClient) {
    let server
    if (typeof btpClient === 'string') {
      server = btpClient
    } else {
      const u = new URL(String(btpClient.url).replace(/^btp\+/, ''))
      u.username = encodeURIComponent(String(btpClient.username || ''))
      u.password = encodeURIComponent(String(btpClient.token || ''))
      server = (String(btpClient.url).startsWith('btp+') ? 'btp+' : '') + u.toString()
    }
    out.plugin = 'ilp-plugin-btp'
    out.options = { server }
  } else {
    out.plugin = 'ilp-plugin-http'
    out.options = {
      incoming: {
        // http.Server#listen accepts an options object: bind 127.0.0.1.
        port: { port: Number(http.port), host: '127.0.0.1' },
        staticToken: String(http.incomingToken)
      },
      outgoing: {
        url: String(http.url),
        staticToken: String(http.outgoingToken),
        name: String(http.name || 'jsc')
      }
    }
  }
  return out
}

// Resolves once something accepts TCP on 127.0.0.1:port (bounded).
function waitForPort (port, ms) {
  const deadline = Date.now() + ms
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const s = net.connect({ host: '127.0.0.1', port })
      s.once('connect', () => { s.destroy(); resolve() })
      s.once('error', () => {
        s.destroy()
        if (Date.now() > deadline) reject(new Error(`port ${port} did not open within ${ms} ms`))
        else setTimeout(attempt, 50)
      })
    }
    attempt()
  })
}

async function main () {
  const args = lib.parseArgs()
  lib.installCrashHandlers()
  lib.armTimeout(args, 600)
  const file = String(lib.required(args, 'config'))
  let cfg
  try {
    cfg = JSON.parse(fs.readFileSync(file, 'utf8'))
  } catch (e) {
    lib.fail(`cannot read config ${file}: ${e.message}`)
  }
  if (!cfg.ilpAddress) lib.fail('config: ilpAddress is required')
  if (!cfg.accounts || Object.keys(cfg.accounts).length === 0) lib.fail('config: accounts are required')

  // ilp-connector logs to stdout by default; stdout is for our JSON only.
  require('ilp-connector/dist/common/log').setOutputStream(process.stderr)
  const { createApp } = require('ilp-connector')

  const accounts = {}
  const listenPorts = []
  for (const [id, acc] of Object.entries(cfg.accounts)) {
    accounts[id] = buildAccount(id, acc)
    if (acc.btpServer) listenPorts.push(Number(acc.btpServer.port))
    if (acc.http) listenPorts.push(Number(acc.http.port))
  }

  const opts = Object.assign({
    env: 'test',
    ilpAddress: cfg.ilpAddress,
    accounts,
    backend: 'one-to-one',
    spread: 0,
    store: 'memory',
    disableMiddleware: ['rateLimit'],
    adminApi: false,
    // Server-side BTP accounts only "connect" when their client does; do not
    // hold start-up for them (the listeners are up at once either way).
    initialConnectTimeout: 1000
  }, cfg.connector || {})

  const app = createApp(opts)
  let stopping = false
  const stop = async (code) => {
    if (stopping) return
    stopping = true
    try {
      await lib.withTimeout(app.shutdown(), 3000, 'shutdown timed out')
    } catch (e) {
      process.stderr.write(`js-connector: ${e.message}\n`)
    }
    lib.emit({ stopped: true })
    lib.exitAfterFlush(code)
  }
  process.on('SIGTERM', () => stop(0))
  process.on('SIGINT', () => stop(0))

  await app.listen()
  await Promise.all(listenPorts.map((p) => waitForPort(p, 10000)))
  lib.emit({ ready: true, ilpAddress: cfg.ilpAddress, listening: listenPorts })

  if (!args['no-stdin']) {
    process.stdin.on('end', () => stop(0))
    process.stdin.on('error', () => stop(0))
    process.stdin.resume()
  }
}

main().catch(lib.fail)
