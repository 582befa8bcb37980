// ilp-protocol-stream's client pays a receiver that speaks hex lines on stdio
// (stream/examples/stdio_receiver.rs). docs/stream.md "Checking against
// ilp-protocol-stream" says how to run it.
const { spawn } = require('child_process')
const readline = require('readline')
const { createConnection } = require('ilp-protocol-stream')
const ILDCP = require('ilp-protocol-ildcp')
const IlpPacket = require('ilp-packet')

async function main () {
  const [bin, amount, receiveMax] = process.argv.slice(2)
  const child = spawn(bin, receiveMax ? [receiveMax] : [], { stdio: ['pipe', 'pipe', 'inherit'] })
  const rl = readline.createInterface({ input: child.stdout })
  const lines = []
  const waiters = []
  rl.on('line', l => { const w = waiters.shift(); if (w) w(l); else lines.push(l) })
  const next = () => lines.length ? Promise.resolve(lines.shift()) : new Promise(r => waiters.push(r))
  let queue = Promise.resolve()
  const spsp = JSON.parse(await next())
  const plugin = {
    connect: async () => {}, disconnect: async () => {}, isConnected: () => true,
    registerDataHandler () {}, deregisterDataHandler () {},
    registerMoneyHandler () {}, deregisterMoneyHandler () {}, sendMoney: async () => {},
    sendData: (buf) => {
      const p = IlpPacket.deserializeIlpPrepare(buf)
      if (p.destination === 'peer.config') {
        return Promise.resolve(ILDCP.serializeIldcpResponse({ clientAddress: 'test.js.sender', assetCode: 'XYZ', assetScale: 9 }))
      }
      // One request at a time on the pipe, in order.
      const r = queue.then(() => { child.stdin.write(buf.toString('hex') + '\n'); return next() })
      queue = r.catch(() => {})
      return r.then(h => Buffer.from(h, 'hex'))
    }
  }
  const conn = await createConnection({ plugin, destinationAccount: spsp.destination_account, sharedSecret: Buffer.from(spsp.shared_secret, 'base64') })
  const stream = conn.createStream()
  let err = null
  try { await stream.sendTotal(amount, { timeout: 20000 }) } catch (e) { err = e.message }
  await conn.end()
  console.log(JSON.stringify({ sent: stream.totalSent, delivered: conn.totalDelivered, error: err, destAsset: conn.destinationAssetCode, destScale: conn.destinationAssetScale }))
  child.stdin.end()
  await new Promise(r => child.on('exit', r))
}
main().catch(e => { console.error(e); process.exit(1) })
