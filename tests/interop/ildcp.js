'use strict'
// ildcp.js --btp ws://user:token@127.0.0.1:PORT   (or --http URL --token T)
// Asks the connector for our address and asset over IL-DCP
// (RFC 31 "Packet") and prints {"clientAddress","assetScale","assetCode"}.
const ILDCP = require('ilp-protocol-ildcp')
const lib = require('./lib')

async function main () {
  const args = lib.parseArgs()
  lib.installCrashHandlers()
  lib.armTimeout(args, 30)
  const plugin = lib.makePlugin(args)
  await lib.connectPlugin(plugin, args)
  const info = await ILDCP.fetch(plugin.sendData.bind(plugin))
  lib.emit({ clientAddress: info.clientAddress, assetScale: info.assetScale, assetCode: info.assetCode })
  lib.exitAfterFlush(0)
}

main().catch(lib.fail)
