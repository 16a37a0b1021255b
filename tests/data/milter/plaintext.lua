-- plaintext.lua: a session that never did STARTTLS; its message is marked tls=none.
local conn = open()
postfix_connect(conn, "unknown", "192.0.2.8")
check(mt.helo(conn, "plain.example.org"), "helo")
mt.macro(conn, SMFIC_MAIL, "i", "5DEF1")
check(mt.mailfrom(conn, "<a@example.org>"), "mail")
check(mt.eom(conn), "eom")
expect_continue(conn, "eom")
if not mt.eom_check(conn, MT_HDRADD, "X-TLSLedger", "class=unknown; flags=none; severity=none; tls=none") then
    fail("header not added: " .. tostring(mt.getheader(conn, "X-TLSLedger", 0)))
end
mt.disconnect(conn)
