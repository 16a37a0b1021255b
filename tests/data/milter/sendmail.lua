-- sendmail.lua: Sendmail's macros, with {verify}=OK for a trusted client certificate.
local conn = open()
mt.macro(conn, SMFIC_CONNECT, "j", "sm.example.net", "{daemon_name}", "MTA", "v", "8.17.1")
check(mt.conninfo(conn, "[192.0.2.9]", "192.0.2.9"), "conninfo")
mt.macro(conn, SMFIC_HELO, "{tls_version}", "TLSv1.2", "{cipher}", "ECDHE-RSA-AES256-GCM-SHA384",
    "{cipher_bits}", "256", "{alg_bits}", "256", "{verify}", "OK",
    "{cert_subject}", "/CN=client.example.org", "{cert_issuer}", "/CN=Example+20CA")
check(mt.helo(conn, "client.example.org"), "helo")
mt.macro(conn, SMFIC_MAIL, "i", "6GHI1")
check(mt.mailfrom(conn, "<a@example.org>"), "mail")
check(mt.eom(conn), "eom")
expect_continue(conn, "eom")
mt.disconnect(conn)
