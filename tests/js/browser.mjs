// Subscribes to an ssehub stream from a real browser page: headless
// Chromium (the system's, /usr/bin/chromium, driven by playwright-core)
// opens a page served by a tiny HTTP server of this script on another
// loopback port, so the page is of another origin than the stream, and the
// page's own `EventSource` connects with `?access_token=` (browsers cannot
// set headers on it). What the page receives is printed as JSON lines, in
// the same shape as eventsource.mjs prints:
//
//   {"type":"page","origin":"http://127.0.0.1:…"}        the page's origin
//   {"type":"open"}                                      a connection opened
//   {"type":"message","lastEventId":"…","event":…}       e.lastEventId, JSON.parse(e.data).event
//   {"type":"error","readyState":0}                      0: reconnecting, 2: given up
//   {"type":"request","origin":"…","lastEventId":…}      the browser's stream request
//   {"type":"response","status":200,"allowOrigin":"*"}   and its answer
//   {"type":"console","text":"…"}                        the page's console (CORS errors show here)
//
// It exits 0 after --count messages (after checking that the page's own
// record holds the same), 2 when the page's EventSource gives up, 3 on
// --timeout-ms. A dropped connection is left to the browser, which
// reconnects by itself with `Last-Event-ID`.
//
// An https:// stream's certificate is verified; --trust-spki HASH (the
// base64 SHA-256 of the server certificate's SubjectPublicKeyInfo) makes
// Chromium accept that certificate (it takes no CA file; this writes to no
// NSS store).
//
// usage: node browser.mjs --url STREAM_URL --key KEY --count N [--timeout-ms MS] [--trust-spki HASH]

import http from 'node:http'
import {parseArgs} from 'node:util'
import {launch} from './chromium.mjs'

const {values: opts} = parseArgs({
  options: {
    url: {type: 'string'},
    key: {type: 'string'},
    count: {type: 'string'},
    'timeout-ms': {type: 'string', default: '15000'},
    'trust-spki': {type: 'string'},
  },
})
if (!opts.url || !opts.key || !opts.count) {
  console.error('usage: node browser.mjs --url STREAM_URL --key KEY --count N')
  process.exit(64)
}
const count = Number(opts.count)

// The page: everything it needs comes in its own query string. It keeps its
// own record in `window.received` and reports each step through
// `window.report`, which the script exposes before any page script runs.
const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>ssehub browser client</title>
<script>
  const params = new URLSearchParams(location.search)
  const url = new URL(params.get('stream'))
  url.searchParams.set('access_token', params.get('token'))
  window.received = []
  const es = new EventSource(url)
  es.onopen = () => window.report({type: 'open'})
  es.onerror = () => window.report({type: 'error', readyState: es.readyState})
  es.onmessage = (e) => {
    const line = {type: 'message', lastEventId: e.lastEventId, event: JSON.parse(e.data).event}
    window.received.push(line)
    window.report(line)
  }
</script>
`

function print(line) {
  process.stdout.write(JSON.stringify(line) + '\n')
}

let browser
let pageServer
async function finish(code) {
  await browser?.close().catch(() => {})
  pageServer?.close()
  process.exit(code)
}

setTimeout(() => {
  console.error(`browser.mjs: timed out with ${received} of ${count} messages`)
  finish(3)
}, Number(opts['timeout-ms'])).unref()

pageServer = http.createServer((req, res) => {
  if (new URL(req.url, 'http://page').pathname !== '/') {
    res.writeHead(204).end() // the favicon: nothing, and no error in the console
    return
  }
  res.writeHead(200, {'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store'}).end(PAGE)
})
await new Promise((resolve) => pageServer.listen(0, '127.0.0.1', resolve))
const pageOrigin = `http://127.0.0.1:${pageServer.address().port}`

browser = await launch(opts['trust-spki'] ? [`--ignore-certificate-errors-spki-list=${opts['trust-spki']}`] : [])
const page = await browser.newPage()
const streamPath = new URL(opts.url).pathname

page.on('console', (msg) => print({type: 'console', text: msg.text()}))
page.on('pageerror', (err) => print({type: 'console', text: String(err)}))
page.on('request', async (req) => {
  if (new URL(req.url()).pathname !== streamPath) return
  const headers = await req.allHeaders()
  print({type: 'request', origin: headers.origin ?? null, lastEventId: headers['last-event-id'] ?? null})
})
page.on('response', async (res) => {
  if (new URL(res.url()).pathname !== streamPath) return
  const allowOrigin = await res.headerValue('access-control-allow-origin')
  print({type: 'response', status: res.status(), allowOrigin})
})

let received = 0
await page.exposeFunction('report', async (line) => {
  print(line)
  if (line.type === 'error' && line.readyState === 2) {
    await finish(2)
  }
  if (line.type !== 'message' || ++received < count) return
  const recorded = await page.evaluate(() => window.received.length)
  if (recorded !== count) {
    console.error(`browser.mjs: the page recorded ${recorded} messages, reported ${count}`)
    await finish(1)
  }
  await finish(0)
})

print({type: 'page', origin: pageOrigin})
const query = new URLSearchParams({stream: opts.url, token: opts.key})
await page.goto(`${pageOrigin}/?${query}`)
