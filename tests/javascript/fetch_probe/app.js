// A JavaScript test plugin (componentize-qjs): NOOP answers `250` with
// `fetch=<typeof fetch>`, so tests/http.rs can tell whether the QuickJS
// runtime offers a fetch over wasi:http.
export const noop = {
  handleNoop(session, envelope, arg) {
    return { code: 250, enhanced: null, lines: [`fetch=${typeof fetch}`] };
  },
};
