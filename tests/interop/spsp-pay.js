'use strict'
// spsp-pay.js (--btp ws://user:token@127.0.0.1:PORT | --http URL --token T)
//             --spsp URL --amount N [--receipts] [--timeout S (60)]
// Queries the SPSP endpoint URL (RFC 9: GET with Accept
// application/spsp4+json, as ilp-protocol-spsp does; with --receipts, the
// RFC 39 Receipt-Nonce and Receipt-Secret headers), then pays exactly N
// source units to the destination it returned with ilp-protocol-stream,
// like stream-sender.js, and prints
//   {"sent", "delivered", "destinationAccount", "receiptsEnabled", "receiptTotal"}
// ("receiptTotal": with --receipts, the total in the stream's last RFC 39
// receipt, after checking its HMAC with the secret we sent; else null)
// and exits 0; exits 1 if the query failed or fewer than N units were sent.
const crypto = require('crypto')
const { createConnection } = require('ilp-protocol-stream')
const lib = require('./lib')

async function main () {
  const args = lib.parseArgs()
  lib.installCrashHandlers()
  lib.armTimeout(args, 60)
  const url = String(lib.required(args, 'spsp'))
  if (!/^http:\/\/127\.0\.0\.1[:/]/.test(url)) lib.fail(`--spsp must be a loopback http:// URL: ${url}`)
  const amount = String(lib.required(args, 'amount'))
  if (!/^[0-9]+$/.test(amount)) lib.fail(`bad --amount ${amount}`)
  const sendMs = Number(args['send-timeout-ms'] || 30000)

  const headers = { Accept: 'application/spsp4+json, application/spsp+json' }
  let receiptSecret = null
  if (args.receipts) {
    receiptSecret = crypto.randomBytes(32)
    headers['Receipt-Nonce'] = crypto.randomBytes(16).toString('base64')
    headers['Receipt-Secret'] = receiptSecret.toString('base64')
  }
  const res = await lib.withTimeout(fetch(url, { headers }), 10000, 'SPSP query timed out')
  const body = await res.text()
  if (res.status !== 200) lib.fail(`SPSP query answered ${res.status}: ${body}`)
  const ctype = res.headers.get('content-type') || ''
  if (!ctype.startsWith('application/spsp4+json')) lib.fail(`SPSP content type ${ctype}`)
  const spsp = JSON.parse(body)
  const destinationAccount = spsp.destination_account
  const sharedSecret = Buffer.from(spsp.shared_secret, 'base64')
  if (typeof destinationAccount !== 'string' || sharedSecret.length !== 32) {
    lib.fail(`bad SPSP response ${body}`)
  }

  const plugin = lib.makePlugin(args)
  await lib.connectPlugin(plugin, args)
  const conn = await lib.withTimeout(
    createConnection({ plugin, destinationAccount, sharedSecret }),
    15000, 'STREAM connection did not open')
  conn.on('error', (e) => process.stderr.write(`spsp-pay: connection error: ${e.message}\n`))
  const stream = conn.createStream()
  await lib.withTimeout(stream.sendTotal(amount), sendMs,
    `sendTotal(${amount}) did not finish within ${sendMs} ms (sent ${stream.totalSent})`)

  const result = {
    sent: stream.totalSent,
    delivered: conn.totalDelivered,
    destinationAccount,
    receiptsEnabled: spsp.receipts_enabled === true,
    receiptTotal: receiptTotal(stream.receipt, receiptSecret)
  }
  if (BigInt(stream.totalSent) !== BigInt(amount)) {
    lib.fail(`sent ${stream.totalSent}, wanted exactly ${amount}`, result)
  }
  lib.emit(result)
  lib.exitAfterFlush(0)
}

// RFC 39 "Specification": version 1 ‖ nonce 16 ‖ streamId 1 ‖
// totalReceived UInt64 ‖ HMAC-SHA256(secret, the 26 bytes before it).
function receiptTotal (receipt, secret) {
  if (!receipt || !secret) return null
  if (receipt.length !== 58 || receipt[0] !== 1) lib.fail(`malformed receipt ${receipt.toString('hex')}`)
  const mac = crypto.createHmac('sha256', secret).update(receipt.slice(0, 26)).digest()
  if (!mac.equals(receipt.slice(26))) lib.fail('receipt HMAC does not verify')
  return receipt.readBigUInt64BE(18).toString()
}

main().catch(lib.fail)
