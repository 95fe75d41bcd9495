//! Tenants: named chains with their own limits, routed by listener (a whole
//! session) or by recipient domain (each transaction's recipients split
//! between the tenants that serve them).

#[path = "harness/mod.rs"]
mod harness;

use harness::{Client, Server, plugin_path};

fn plugins() -> String {
    format!(
        "[plugin.every]\ncomponent = \"{}\"\n\n[plugin.versioned]\ncomponent = \"{}\"\nargs = [\"globex-policy\"]\n\n[plugin.trap]\ncomponent = \"{}\"\n",
        plugin_path("every_hook.wasm").display(),
        plugin_path("versioned.wasm").display(),
        plugin_path("trap.wasm").display()
    )
}

fn server(listener: &str, tenants: &str) -> Server {
    Server::start_config(&format!(
        "[server]\nhostname = \"mx.wasmtp.test\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n{listener}\n\n{tenants}\n{}",
        plugins()
    ))
}

const TWO_TENANTS: &str = "[tenant.acme]\nplugins = [\"every\"]\ndomains = [\"acme.example\"]\n\n[tenant.globex]\nplugins = [\"versioned\"]\ndomains = [\"globex.example\", \"mail.globex.example\"]\n";

#[test]
fn recipients_go_to_the_tenant_of_their_domain() {
    let server = server("tenants = [\"acme\", \"globex\"]", TWO_TENANTS);
    let mut c = Client::after_ehlo(server.addr());
    c.expect("MAIL FROM:<anne@example.com>", 250);
    assert!(
        c.expect("RCPT TO:<bart@acme.example>", 250)
            .text()
            .contains("every-hook rcpt bart@acme.example")
    );
    assert_eq!(
        c.expect("RCPT TO:<cate@Mail.Globex.Example>", 250).text(),
        "recipient accepted by globex-policy"
    );
    // No tenant serves it, and the listener has no chain of its own.
    assert_eq!(
        c.expect("RCPT TO:<dave@elsewhere.example>", 550).text(),
        "5.1.2 Error: recipient domain not served here"
    );
    c.expect("DATA", 354);
    c.send_raw(b"Subject: two tenants\r\n\r\nhello\r\n.\r\n");
    // Each tenant saw only its own recipients; the reply is the first group's.
    let reply = c.expect_reply(250).text();
    assert!(reply.contains("to=bart@acme.example ["), "{reply}");
    assert!(!reply.contains("globex"), "{reply}");
}

#[test]
fn a_tenant_that_fails_makes_the_client_retry_and_spares_the_others() {
    let tenants = "[tenant.acme]\nplugins = [\"every\"]\ndomains = [\"acme.example\"]\n\n[tenant.broken]\nplugins = [\"trap\"]\ndomains = [\"broken.example\"]\n";
    let mut server = server("tenants = [\"acme\", \"broken\"]", tenants);
    let mut c = Client::after_ehlo(server.addr());
    // Both tenants' recipients: the broken one's failure is the reply, so
    // the client retries (acme may see the message twice, never zero times).
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@acme.example>", 250);
    c.expect("RCPT TO:<cate@broken.example>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: x\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.expect_reply(451).text(), "4.3.0 Error: plugin failed");
    // acme's mail alone is unaffected.
    c.expect("MAIL FROM:<anne@example.com>", 250);
    c.expect("RCPT TO:<bart@acme.example>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: y\r\n\r\ny\r\n.\r\n");
    assert!(c.expect_reply(250).text().contains("every-hook data"));
    server.wait_for_stderr("plugin=\"broken/trap\"");
}

#[test]
fn a_listener_can_serve_one_tenant_for_whole_sessions() {
    let mut server = server("tenant = \"acme\"", TWO_TENANTS);
    let mut c = Client::greeted(server.addr());
    assert!(
        c.expect("HELO client.example", 250)
            .text()
            .starts_with("every-hook helo")
    );
    server.wait_for_stderr("plugins=\"acme/every\"");
}

#[test]
fn unrouted_recipients_go_to_the_listener_chain() {
    let server = server(
        "plugin = \"versioned\"\ntenants = [\"acme\"]",
        "[tenant.acme]\nplugins = [\"every\"]\ndomains = [\"acme.example\"]\n",
    );
    let mut c = Client::after_ehlo(server.addr());
    c.expect("MAIL FROM:<anne@example.com>", 250);
    assert_eq!(
        c.expect("RCPT TO:<dave@elsewhere.example>", 250).text(),
        "recipient accepted by globex-policy"
    );
    assert!(
        c.expect("RCPT TO:<bart@acme.example>", 250)
            .text()
            .contains("every-hook")
    );
}

#[test]
fn tenant_config_errors_name_the_key() {
    let out = harness::run_wasmtp(
        &["--config", "/dev/null"],
        std::time::Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    for (toml, message) in [
        (
            "[[listener]]\naddress = \"127.0.0.1:0\"\ntenants = [\"nobody\"]\n",
            "listener[0].tenants: no tenant is named `nobody` (known: none)",
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:0\"\ntenants = [\"a\", \"b\"]\n[tenant.a]\nplugins = [\"sink\"]\ndomains = [\"x.example\"]\n[tenant.b]\nplugins = [\"sink\"]\ndomains = [\"X.example\"]\n",
            "listener[0].tenants: the domain `x.example` belongs to two of this listener's tenants",
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:0\"\ntenant = \"a\"\nplugin = \"sink\"\n[tenant.a]\nplugins = [\"sink\"]\n",
            "listener[0].tenant: a listener served by one tenant takes no other",
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:0\"\ntenant = \"a\"\n[tenant.a]\nplugins = [\"sink\"]\nhook_timeout = -1\n",
            "tenant.a.hook_timeout: -1 is not a positive number of seconds",
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:0\"\nprotocol = \"lmtp\"\ntenants = [\"a\"]\n[tenant.a]\nplugins = [\"sink\"]\ndomains = [\"x.example\"]\n",
            "listener[0].tenants: an LMTP listener can't split messages between tenants",
        ),
    ] {
        let path = dir.path().join("t.toml");
        std::fs::write(&path, toml).unwrap();
        let out = harness::run_wasmtp(
            &["--config", path.to_str().unwrap()],
            std::time::Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(message), "expected {message:?} in {stderr}");
    }
}
