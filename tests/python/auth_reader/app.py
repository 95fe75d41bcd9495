"""A Python test plugin: in ``data``, reads ``mail-auth.results`` and answers
``250 2.0.0`` with one line per result, as the Rust dns-probe does, so that
tests/dns_auth.rs can check that a Python plugin reads the same results.
"""

from wit_world import exports
from wit_world.imports import mail_auth
from wit_world.imports.types import Envelope, Reply, Session


def method(r: mail_auth.MethodResult) -> str:
    text = r.result
    if r.reason is not None:
        text += f" ({r.reason})"
    for p in r.properties:
        text += f" {p.key}={p.value}"
    return text


class Data(exports.Data):
    def handle_data(self, session: Session, envelope: Envelope):
        r = mail_auth.results()
        if r is None:
            return Reply(code=250, enhanced="2.0.0", lines=["no results"])
        lines = [
            "iprev=" + method(r.iprev),
            "spf-helo=" + method(r.spf_helo),
            "spf-mail-from=" + method(r.spf_mail_from),
        ]
        lines += ["dkim=" + method(d) for d in r.dkim]
        lines.append("arc=" + method(r.arc))
        lines.append("dmarc=" + method(r.dmarc))
        lines.append("policy=" + r.dmarc_policy.name.lower())
        lines.append("header: " + r.header_value.replace("\r\n\t", " "))
        return Reply(code=250, enhanced="2.0.0", lines=[line[:400] for line in lines])
