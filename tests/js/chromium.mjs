// Debian's Chromium, headless, as every browser test here starts it: the
// flags keep it off the network this machine does not have (without the
// background-networking ones its connections are refused many at a time).

import {chromium} from 'playwright-core'

const CHROMIUM = '/usr/bin/chromium'
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

// `extra`: more flags, such as the HTTPS tests' trust of their test CA.
export function launch(extra = []) {
  return chromium.launch({executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS, ...extra]})
}
