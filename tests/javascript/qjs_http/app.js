// A JavaScript test plugin (componentize-qjs): `NOOP URL` makes a GET of
// URL and answers `250` with `fetch=<typeof fetch>` (whether QuickJS's
// runtime offers fetch) and `status=200 bytes=5` or `error=<code>`.
//
// componentize-qjs 0.4.5's runtime has no `fetch`, so the request is made
// with the wasi:http imports themselves, which the bindings expose as ES
// modules like any other import. With 0.4.5 this does not build (its
// pre-initialisation links wasi:http/types to resource types of its own);
// tests/http.rs checks that it still fails, so that a release that builds
// it gets this plugin driven through the server. A JavaScript plugin that
// makes HTTP requests is built with ComponentizeJS, whose runtime has
// `fetch` (tests/javascript/http_fetch).

import { handle } from 'wasi:http/outgoing-handler@0.2.12';
import { Fields, OutgoingRequest, OutgoingBody } from 'wasi:http/types@0.2.12';

function get(url) {
  const [scheme, rest] = url.split('://');
  const slash = rest.indexOf('/');
  const authority = slash < 0 ? rest : rest.slice(0, slash);
  const path = slash < 0 ? '/' : rest.slice(slash);
  const request = new OutgoingRequest(new Fields());
  request.setMethod({ tag: 'get' });
  request.setScheme({ tag: scheme === 'https' ? 'HTTPS' : 'HTTP' });
  request.setAuthority(authority);
  request.setPathWithQuery(path);
  const body = request.body();
  let future;
  try {
    future = handle(request, null);
  } catch (e) {
    return 'error=' + describe(e);
  }
  OutgoingBody.finish(body, null);
  future.subscribe().block();
  const got = future.get();
  const inner = got && got.tag === 'ok' ? got.val : null;
  if (!inner) return 'error=no-response';
  if (inner.tag === 'err') return 'error=' + describe(inner.val);
  const response = inner.val;
  const status = response.status();
  const stream = response.consume().stream();
  let bytes = 0;
  for (;;) {
    try {
      bytes += stream.blockingRead(65536).length;
    } catch (e) {
      break; // closed (or cut short)
    }
  }
  return `status=${status} bytes=${bytes}`;
}

function describe(e) {
  if (e && typeof e === 'object' && 'tag' in e) return e.tag;
  return String(e);
}

export const noop = {
  handleNoop(session, envelope, arg) {
    const lines = [`fetch=${typeof fetch}`];
    try {
      lines.push(get(arg.trim()));
    } catch (e) {
      lines.push('exception=' + String(e).slice(0, 200));
    }
    return { code: 250, enhanced: null, lines };
  },
};
