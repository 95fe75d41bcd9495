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

/** Bytes as a string, one character per byte (header fields are ASCII).
 *  In QuickJS this costs about 15 ns a byte, so only the header block is
 *  converted: the blank line that ends it is found in the bytes. */
function latin1(bytes) {
  let text = '';
  for (let i = 0; i < bytes.length; i += 4096) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 4096));
  }
  return text;
}

/** The header block, read from the host a chunk at a time until the blank
 *  line that ends it (a message without one is all header). */
function headerBlock() {
  let text = '';
  for (;;) {
    const chunk = readNext(CHUNK);
    if (chunk.length === 0) return text;
    const end = blankLine(chunk, text);
    if (end >= 0) return text + latin1(chunk.subarray(0, end));
    text += latin1(chunk);
  }
}

/** Where in `bytes` the blank line ending the header block starts, or -1.
 *  `before` is the header text read before `bytes`, for a blank line that
 *  straddles two chunks. `Uint8Array.indexOf` runs natively: one call per
 *  line, not per byte. */
function blankLine(bytes, before) {
  if (before === '' || before.endsWith('\n')) {
    // A line starts at bytes[0].
    if (bytes[0] === 10 || (bytes[0] === 13 && bytes[1] === 10)) return 0;
  } else if (before.endsWith('\n\r') && bytes[0] === 10) {
    return 0;
  }
  for (let lf = bytes.indexOf(10); lf >= 0; lf = bytes.indexOf(10, lf + 1)) {
    const next = lf + 1;
    if (bytes[next] === 10 || (bytes[next] === 13 && bytes[next + 1] === 10)) return next;
  }
  return -1;
}

/** A header field `X-Spam-Flag: YES`, any case, any blanks around the value.
 *  One regular expression over the block: QuickJS runs it as compiled
 *  bytecode, where a loop over the lines would be interpreted. */
const SPAM_FLAG = /^x-spam-flag[ \t]*:[ \t]*yes[ \t]*\r?$/im;

export const data = {
  handleData(session, envelope) {
    if (SPAM_FLAG.test(headerBlock())) {
      return { code: 550, enhanced: '5.7.1', lines: ['message refused: X-Spam-Flag is YES'] };
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
