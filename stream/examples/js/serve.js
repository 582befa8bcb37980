// ilp-protocol-stream's Server is paid by a sender that speaks hex lines on stdio
// (stream/examples/stdio_sender.rs). docs/stream.md "Checking against
// ilp-protocol-stream" says how to run it.
const { spawn } = require('child_process')
const readline = require('readline')
const { createServer } = require('ilp-protocol-stream')
const ILDCP = require('ilp-protocol-ildcp')

async function main () {
  const [bin, amount, receiveMax] = process.argv.slice(2)
  let handler
  const plugin = {
    connect: async () => {}, disconnect: async () => {}, isConnected: () => true,
    registerDataHandler: h => { handler = h }, deregisterDataHandler: () => {},
    registerMoneyHandler () {}, deregisterMoneyHandler () {}, sendMoney: async () => {},
    sendData: async () => ILDCP.serializeIldcpResponse({ clientAddress: 'test.js.server', assetCode: 'XYZ', assetScale: 9 })
  }
  const server = await createServer({ plugin })
  let received = '0'
  server.on('connection', c => {
    c.on('stream', s => { s.setReceiveMax(receiveMax || '18446744073709551615'); s.on('money', () => { received = s.totalReceived }) })
  })
  const det = server.generateAddressAndSecret()
  const spsp = JSON.stringify({ destination_account: det.destinationAccount, shared_secret: det.sharedSecret.toString('base64') })
  const child = spawn(bin, [spsp, amount], { stdio: ['pipe', 'pipe', 'inherit'] })
  const rl = readline.createInterface({ input: child.stdout })
  let queue = Promise.resolve()
  rl.on('line', l => {
    queue = queue.then(async () => {
      const reply = await handler(Buffer.from(l, 'hex'))
      child.stdin.write(reply.toString('hex') + '\n')
    })
  })
  await new Promise(r => child.on('exit', r))
  console.log(JSON.stringify({ jsServerReceived: received }))
  process.exit(0)
}
main().catch(e => { console.error(e); process.exit(1) })
