// Drives the web inspector (/ui) in headless Chromium (the system's,
// through playwright-core) as a user would, emitting events itself with
// plain HTTP requests (as curl would), and checks what the page shows.
// tests/inspector.rs runs it; when the script needs the server restarted
// it prints {"type":"restart"} and waits for a line on stdin.
//
// Lines on stdout (JSON): {"type":"step","name":…} as it goes,
// {"type":"console",…} for the page's console, {"type":"restart"},
// {"type":"done"} at the end. Exit 0 when every check held, 1 with a
// reason on stderr otherwise.
//
// usage: node inspector.mjs --base http://127.0.0.1:PORT --key KEY --shots DIR [--prefix]
//
// With --prefix, --base is a reverse proxy's URL with a path prefix
// (http://127.0.0.1:PORT/ssehub) and the walk is a short one: the page
// loads, lists the sources, shows a live event, reloads on a source's URL
// and goes back to the list, all under that prefix.

import {mkdirSync} from 'node:fs'
import {createInterface} from 'node:readline'
import {parseArgs} from 'node:util'
import {launch} from './chromium.mjs'

const {values: opts} = parseArgs({options: {base: {type: 'string'}, key: {type: 'string'}, shots: {type: 'string'}, prefix: {type: 'boolean'}}})
if (!opts.base || !opts.key || !opts.shots) {
  console.error('usage: node inspector.mjs --base URL --key KEY --shots DIR')
  process.exit(64)
}
mkdirSync(opts.shots, {recursive: true})

const print = (line) => process.stdout.write(JSON.stringify(line) + '\n')
const step = (name) => print({type: 'step', name})
const stdin = createInterface({input: process.stdin})[Symbol.asyncIterator]()

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`)
}

// An HTTP call as curl would make it.
async function call(method, path, body, headers = {}) {
  const res = await fetch(opts.base + path, {
    method,
    headers: {Authorization: `Bearer ${opts.key}`, 'Content-Type': 'application/json', ...headers},
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  })
  const text = await res.text()
  return {status: res.status, json: text ? JSON.parse(text) : null}
}

async function emit(payload) {
  const r = await call('POST', '/v1/sources/orders/events', payload)
  check(r.status === 202, `emit answered ${r.status}`)
  return r.json.id
}

const problems = [] // console errors and CSP violations
// Errors a step provokes on purpose (a wrong key's 401, a stream refused
// while the server restarts) are not problems.
let expected = null
let browser
try {
  browser = await launch()
  const context = await browser.newContext({viewport: {width: 1280, height: 800}, colorScheme: 'light'})
  const page = await context.newPage()
  await page.addInitScript(() => {
    window.__csp = []
    document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`))
  })
  page.on('console', (msg) => {
    print({type: 'console', level: msg.type(), text: msg.text()})
    if ((msg.type() === 'error' || msg.type() === 'warning') && !expected?.test(msg.text())) problems.push(msg.text())
  })
  page.on('pageerror', (err) => {
    print({type: 'console', level: 'pageerror', text: String(err)})
    problems.push(String(err))
  })
  page.on('dialog', (d) => d.accept())
  const shot = (name) => page.screenshot({path: `${opts.shots}/${name}.png`, fullPage: true})
  // The ids of the rows in the list, top (newest) first.
  const rowIds = () => page.$$eval('#events li.row', (rows) => rows.map((r) => r.dataset.id))
  async function waitRows(ids, ms) {
    await page.waitForFunction((ids) => ids.every((id) => document.querySelector(`#events li[data-id="${id}"]`)), ids, {timeout: ms})
  }

  async function finish() {
    const csp = await page.evaluate(() => window.__csp)
    check(csp.length === 0, `CSP violations: ${csp}`)
    check(problems.length === 0, `console errors: ${problems.join(' | ')}`)
    print({type: 'done'})
    await browser.close()
    process.exit(0)
  }

  if (opts.prefix) {
    const prefix = new URL(opts.base).pathname.replace(/\/$/, '')
    step('under a prefix: the page loads and lists the sources')
    await page.goto(`${opts.base}/ui`)
    await page.waitForSelector('#keybox:not([hidden])')
    await page.fill('#keyinput', opts.key)
    await page.press('#keyinput', 'Enter')
    await page.waitForSelector('.card[data-source]')
    const names = await page.$$eval('.card header a', (as) => as.map((a) => a.textContent))
    check(names.includes('orders'), `sources shown: ${names}`)
    check(await page.evaluate(() => getComputedStyle(document.body).fontFamily !== ''), 'the style sheet loaded')

    step('under a prefix: a source shows its history and a live event')
    await page.click('.card header a >> text=orders')
    await page.waitForSelector('.conn[data-state=live]')
    check(new URL(page.url()).pathname.startsWith(`${prefix}/ui/sources/`), `routed under the prefix: ${page.url()}`)
    check((await rowIds()).length === 2, 'the two events emitted before are listed from event_summaries')
    const live = await emit({through: 'the prefix'})
    await waitRows([live], 5000)

    step('under a prefix: the source page reloaded by its URL')
    await page.reload()
    await page.waitForSelector('.conn[data-state=live]')
    await waitRows([live], 5000)

    step('under a prefix: back to the list by the brand link')
    await page.click('a.brand')
    await page.waitForSelector('.card[data-source]')
    check(new URL(page.url()).pathname.startsWith(`${prefix}/ui`), `still under the prefix: ${page.url()}`)
    await finish()
  }

  step('the page asks for a key')
  await page.goto(`${opts.base}/ui`)
  await page.waitForSelector('#keybox:not([hidden])')
  await shot('key')
  check(problems.length === 0, `console errors at load: ${problems.join(' | ')}`)
  expected = /status of 401/
  await page.fill('#keyinput', 'wrong-key')
  await page.press('#keyinput', 'Enter')
  await page.waitForSelector('#keyerr:not([hidden])')
  check((await page.textContent('#keyerr')).includes('not accepted'), 'a wrong key is asked again')

  expected = null
  step('sources appear')
  await page.fill('#keyinput', opts.key)
  await page.click('#keyform button')
  await page.waitForSelector('.card[data-source]')
  const names = await page.$$eval('.card header a', (as) => as.map((a) => a.textContent))
  // Oldest first; the test made both in the same millisecond, so either order.
  check([...names].sort().join() === 'github,orders', `sources shown: ${names}`)
  const curlText = await page.textContent('.card pre')
  check(curlText.includes('/v1/sources/') && curlText.startsWith('curl '), 'a curl command')
  check((await page.evaluate(() => sessionStorage.getItem('ssehub.key'))) === opts.key, 'the key is kept for the tab')
  await shot('sources')

  step('a new source')
  await page.fill('.newsrc input', 'made-in-ui')
  await page.click('.newsrc button')
  await page.waitForSelector('.card header a >> text=made-in-ui')

  step('the source view')
  await page.click('.card header a >> text=orders')
  await page.waitForSelector('.conn[data-state=live]')
  check(new URL(page.url()).pathname.startsWith('/ui/sources/'), 'routed by location')
  check((await rowIds()).length === 2, 'the two events emitted before are listed from event_summaries')

  step('three emits appear within 2 s, in order, with their ids')
  const started = Date.now()
  const three = []
  for (const n of [1, 2, 3]) three.push(await emit({n, note: `event ${n}`}))
  await waitRows(three, 2000)
  const shownIn = Date.now() - started
  const top = (await rowIds()).slice(0, 3)
  check(top.join() === [...three].reverse().join(), `newest first: ${top} vs ${three}`)
  print({type: 'step', name: 'shown', ms: shownIn})

  step('a row expands into a tree with a nested field')
  const nested = await emit({order: {id: 7, customer: {name: 'Ada', tier: 'gold'}, items: [{sku: 'a-1', qty: 2}, {sku: 'b-9', qty: 1}]}, total: 12.5, paid: true})
  await waitRows([nested], 2000)
  await page.click(`#events li[data-id="${nested}"]`)
  await page.waitForSelector('.detail .tree')
  check(await page.isVisible('.detail .tree .k >> text=customer'), 'the second level is open')
  check(!(await page.isVisible('.detail .tree .k >> text=sku')), 'deeper levels start closed')
  await page.click('.detail .tree summary:has(.k:text-is("items"))')
  await page.click('.detail .tree summary:has(.k:text-is("0"))')
  check(await page.isVisible('.detail .tree .k >> text=sku'), 'an expanded node shows its nested field')
  check((await page.textContent('.detail pre')).includes('"sku": "a-1"'), 'the raw payload')
  await shot('event')

  step('a payload is text, never HTML')
  const evil = '<img src=x onerror=window.__x=1>'
  const evilId = await emit({x: evil})
  await waitRows([evilId], 2000)
  await page.click(`#events li[data-id="${evilId}"]`)
  await page.waitForSelector('.detail .tree .v.string')
  check((await page.textContent(`#events li[data-id="${evilId}"]`)).includes(evil), 'the row shows the markup as text')
  check((await page.textContent('.detail .tree')).includes(evil), 'the tree shows the markup as text')
  await page.waitForTimeout(300) // an injected image's error handler would have run by now
  check((await page.$$('main img')).length === 0, 'no element was made from a payload')
  check((await page.evaluate(() => window.__x)) === undefined, 'window.__x stays undefined')

  step('a webhook event shows its headers and body apart')
  const {json: github} = await call('GET', '/v1/sources/github')
  const hook = await fetch(`${github.data.endpoint_url}/push?delivery=42`, {
    method: 'POST',
    headers: {'Content-Type': 'application/json', 'X-GitHub-Event': 'push', 'User-Agent': 'GitHub-Hookshot/1'},
    body: JSON.stringify({ref: 'refs/heads/main', commits: [{id: 'c0ffee', message: 'Fix the thing'}]}),
  })
  check(hook.status === 200, `webhook answered ${hook.status}`)
  await page.click('.crumb a >> text=Sources')
  await page.click('.card header a >> text=github')
  await page.waitForSelector('.conn[data-state=live]')
  await page.click('#events li.row')
  await page.waitForSelector('.detail h3 >> text=Headers')
  check((await page.textContent('#events li.row .method')) === 'POST', 'the row names the method')
  check((await page.textContent('#events li.row .sum')).includes('/push'), 'and the path')
  check((await page.textContent('.detail')).includes('x-github-event'), 'the headers')
  check(await page.isVisible('.detail .tree .k >> text=commits'), 'the body as a tree')
  await shot('webhook')
  await page.emulateMedia({colorScheme: 'dark'})
  await shot('webhook-dark')
  await page.setViewportSize({width: 390, height: 844})
  await shot('phone')
  await page.setViewportSize({width: 1280, height: 800})
  await page.emulateMedia({colorScheme: 'light'})
  await page.goBack()
  await page.goBack()
  await page.waitForSelector('.conn[data-state=live]')
  check((await page.textContent('main h1')) === 'orders', 'back to orders')

  step('a restart of the server: the page resumes by itself, no event twice')
  const before = await rowIds()
  expected = /ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|status of 401/
  print({type: 'restart'})
  await stdin.next()
  const two = [await emit({after: 'restart', n: 1}), await emit({after: 'restart', n: 2})]
  await waitRows(two, 15000)
  const after = await rowIds()
  check(after.length === before.length + 2, `rows: ${before.length} before, ${after.length} after`)
  check(new Set(after).size === after.length, 'each row once')
  check(after.slice(0, 2).join() === [...two].reverse().join(), 'the two new ones on top')

  expected = null
  step('re-emit makes a new event')
  await page.click(`#events li[data-id="${two[0]}"]`)
  await page.click('.detail button >> text=Re-emit')
  await page.waitForFunction((n) => document.querySelectorAll('#events li.row').length === n, after.length + 1, {timeout: 2000})
  const reemitted = (await rowIds())[0]
  check(reemitted !== two[1] && reemitted !== two[0], 'a new id')
  const {json: summaries} = await call('GET', '/v1/sources/orders/event_summaries?limit=1')
  check(summaries.data[0].id === reemitted && summaries.data[0].event.after === 'restart', 'the same payload')
  await shot('source')
  await page.emulateMedia({colorScheme: 'dark'})
  await shot('source-dark')
  await page.emulateMedia({colorScheme: 'light'})

  step('filter and pause')
  await page.fill('.bar input[type=search]', 'note')
  check((await page.$$('#events li.row:not([hidden])')).length === 3, 'the filter keeps the three with a note')
  await page.fill('.bar input[type=search]', '')
  await page.click('.bar button >> text=Pause')
  const held = await emit({held: true})
  await page.waitForSelector('.bar button >> text=Resume (1)')
  check(!(await page.$(`#events li[data-id="${held}"]`)), 'held back while paused')
  await page.click('.bar button >> text=Resume (1)')
  await waitRows([held], 2000)

  step('the stream token is renewed before it expires')
  const renewing = await context.newPage()
  renewing.on('pageerror', (err) => problems.push(String(err)))
  await renewing.goto(`${opts.base}/ui/sources/orders?token_s=3`)
  await renewing.fill('#keyinput', opts.key) // sessionStorage is the tab's
  await renewing.press('#keyinput', 'Enter')
  await renewing.waitForSelector('.conn[data-state=live]')
  const spread = []
  for (let i = 0; i < 8; i++) {
    spread.push(await emit({spread: i}))
    await renewing.waitForTimeout(700) // the emits span more than two token lives
  }
  await renewing.waitForFunction((ids) => ids.every((id) => document.querySelectorAll(`#events li[data-id="${id}"]`).length === 1), spread, {timeout: 5000})
  const renewedIds = await renewing.$$eval('#events li.row', (rows) => rows.map((r) => r.dataset.id))
  check(new Set(renewedIds).size === renewedIds.length, 'no event twice across renewals')
  await renewing.close()

  step('clear history empties the list')
  await page.click('.bar button >> text=Clear history')
  await page.waitForFunction(() => document.querySelectorAll('#events li.row').length === 0, null, {timeout: 2000})
  const {json: empty} = await call('GET', '/v1/sources/orders/event_summaries')
  check(empty.data.length === 0, 'the history is empty on the server')

  step('the list shows every source, a page at a time')
  const {json: listed} = await call('GET', '/v1/sources?limit=1')
  for (let i = 0; i < 150; i++) {
    const r = await call('POST', '/v1/sources', {name: `many-${i}`})
    check(r.status === 201, `create answered ${r.status}`)
  }
  const want = listed.page_info.total_count + 150
  check(want > 100, `more sources than a page: ${want}`)
  await page.goto(`${opts.base}/ui`)
  await page.waitForFunction((n) => document.querySelectorAll('.card[data-source]').length === n, want, {timeout: 10000})
  const last = await page.$$eval('.card header a', (as) => as[as.length - 1].textContent)
  check(last === 'many-149', `the newest source last: ${last}`)

  await finish()
} catch (e) {
  console.error(`inspector.mjs: ${e.stack || e}`)
  await browser?.close().catch(() => {})
  process.exit(1)
}
