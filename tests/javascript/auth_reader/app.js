// A JavaScript test plugin (componentize-qjs): in `data`, reads
// `mail-auth.results` and answers `250 2.0.0` with one line per result, as
// the Rust dns-probe and the Python auth_reader do, so that
// tests/dns_auth.rs can check that a JavaScript plugin reads the same
// results. Records are objects with camelCase fields, an `option` is the
// value or null, an `enum` its case's name as a string.

import { results } from 'wasmtp:smtp/mail-auth@0.1.0';

function method(r) {
  let text = r.result;
  if (r.reason !== null && r.reason !== undefined) {
    text += ` (${r.reason})`;
  }
  for (const p of r.properties) {
    text += ` ${p.key}=${p.value}`;
  }
  return text;
}

export const data = {
  handleData(session, envelope) {
    const r = results();
    if (r === null || r === undefined) {
      return { code: 250, enhanced: '2.0.0', lines: ['no results'] };
    }
    const lines = [
      'iprev=' + method(r.iprev),
      'spf-helo=' + method(r.spfHelo),
      'spf-mail-from=' + method(r.spfMailFrom),
      ...r.dkim.map((d) => 'dkim=' + method(d)),
      'arc=' + method(r.arc),
      'dmarc=' + method(r.dmarc),
      'policy=' + String(r.dmarcPolicy).toLowerCase(),
      'header: ' + r.headerValue.split('\r\n\t').join(' '),
    ];
    return { code: 250, enhanced: '2.0.0', lines: lines.map((l) => l.slice(0, 400)) };
  },
};
