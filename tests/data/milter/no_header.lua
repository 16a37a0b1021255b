-- no_header.lua: with --no-header the milter asks for no header action and adds nothing.
local conn = open()
if mt.test_action(conn, SMFIF_ADDHDRS) or mt.test_action(conn, SMFIF_CHGHDRS) then
    fail("header actions requested with --no-header")
end
postfix_connect(conn, "client.example.org", "192.0.2.11")
check(mt.helo(conn, "client.example.org"), "helo")
check(mt.mailfrom(conn, "<a@example.org>"), "mail")
check(mt.eom(conn), "eom")
expect_continue(conn, "eom")
if mt.eom_check(conn, MT_HDRADD) or mt.eom_check(conn, MT_HDRDELETE) then
    fail("header changed with --no-header")
end
mt.disconnect(conn)
