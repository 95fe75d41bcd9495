// An example wasmtp plugin in JavaScript: a recipient allowlist and a header filter.
//
// The same policy as examples/rust-plugin (and the Python and C examples):
// - arguments: the recipient domains (`example.com`) or addresses
//   (`postmaster@example.org`) to accept; at least one;
// - RCPT TO: any other recipient gets `550 5.1.1`;
// - DATA: a message whose headers carry `X-Spam-Flag: YES` gets `550 5.7.1`;
//   any other gets `250 2.0.0 accepted by the javascript policy`.
//
// Each exported interface of the world (wit/policy.wit) is an exported
// object named after it, with the interface's functions in camelCase. The
// world exports only `setup`, `rcpt`, `data` and `reuse`: the server does
// its default for every other command without calling the plugin.
//
// One instance of the component serves one SMTP session, so module state is
// per-session; `setup.init` runs at the start of each instance. With
// `instances = "reuse"` an instance serves successive sessions, and
// `reuse.reset` runs between them (below).
//
// Built with componentize-qjs (QuickJS; see build.sh). The same source also
// builds with componentize-js (SpiderMonkey), so it keeps to what both
// bindings agree on: `null` for an `option` that is `none`, a thrown string
// for the error of a `result`, and no 64-bit integers (`read-next` rather
// than `read`, whose `u64` offset is a BigInt in one and a number in the other).

import { readNext } from 'wasmtp:smtp/content@0.1.0';
import { log } from 'wasmtp:smtp/log@0.1.0';

/** Lower-cased domains and addresses, from the arguments. */
let allowed = [];

/** How much of the content to ask the host for at a time. */
const CHUNK = 16 * 1024;

export const setup = {
  init(args) {
    if (args.length === 0) {
      // result<_, string>: the thrown string is the error.
      throw 'give at least one allowed recipient domain or address';
    }
    allowed = args.map((arg) => arg.toLowerCase());
  },
};

export const rcpt = {
  handleRcpt(session, envelope, address, options) {
    address = address.toLowerCase();
    const domain = address.slice(address.lastIndexOf('@') + 1);
    if (allowed.includes(address) || allowed.includes(domain)) {
      return null; // the default: 250 OK, and the recipient is recorded
    }
    log('info', `refused recipient ${address}`);
    return { code: 550, enhanced: '5.1.1', lines: [`<${address}>: recipient not allowed`] };
  },
};

/** Bytes as a string, one character per byte (header fields are ASCII; the
 *  rest only has to survive the search for the blank line). */
function latin1(bytes) {
  let text = '';
  for (let i = 0; i < bytes.length; i += 4096) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 4096));
  }
  return text;
}

/** The lines of the header block, read from the host a chunk at a time; the
 *  body is never copied into the plugin. */
function* headerLines() {
  let pending = '';
  for (;;) {
    const chunk = readNext(CHUNK);
    pending += latin1(chunk);
    const lines = pending.split('\n');
    pending = lines.pop();
    for (let line of lines) {
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') return;
      yield line;
    }
    if (chunk.length === 0) {
      if (pending !== '') yield pending;
      return;
    }
  }
}

export const data = {
  handleData(session, envelope) {
    for (const line of headerLines()) {
      const colon = line.indexOf(':');
      if (colon < 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim().toLowerCase();
      if (name === 'x-spam-flag' && value === 'yes') {
        return { code: 550, enhanced: '5.7.1', lines: ['message refused: X-Spam-Flag is YES'] };
      }
    }
    return { code: 250, enhanced: '2.0.0', lines: ['accepted by the javascript policy'] };
  },
};

// Between two sessions of a reused instance (`instances = "reuse"` in the
// server's config). The policy keeps nothing about a session, so there is
// nothing to clear: `allowed` comes from the arguments and stays.
export const reuse = {
  reset() {},
};
