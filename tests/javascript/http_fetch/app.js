// A JavaScript test plugin (componentize-js): in `data` it POSTs the
// envelope as JSON to the URL of its first argument with the language's
// own HTTP client, `fetch`, and turns the answer into the SMTP reply:
// `250 2.0.0 app said: <status> <body>`, or, when `fetch` rejects (a URL
// outside `grants.http` among other causes), `451 4.3.0 fetch failed:
// <error>`.

let url = null;

export const setup = {
  init(args) {
    if (args.length !== 1) throw 'give the URL to post the envelope to';
    url = args[0];
  },
};

export const data = {
  async handleData(session, envelope) {
    try {
      const response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ from: envelope.mailFrom, to: envelope.rcptTos }),
      });
      // One reply line: no line breaks, and not too long.
      const body = (await response.text()).replace(/\s+/g, ' ').trim().slice(0, 400);
      return { code: 250, enhanced: '2.0.0', lines: [`app said: ${response.status} ${body}`] };
    } catch (e) {
      return { code: 451, enhanced: '4.3.0', lines: [`fetch failed: ${String(e).slice(0, 400)}`] };
    }
  },
};
