-- aborted.lua: a message aborted after a forged header (its count must not leak into the next
-- message), then a second message cut off by an abrupt disconnect in mid-transaction.
local conn = open()
postfix_connect(conn, "aborted.example.org", "192.0.2.10")
check(mt.helo(conn, "aborted.example.org"), "helo")
check(mt.mailfrom(conn, "<a@example.org>"), "mail 1")
check(mt.header(conn, "X-TLSLedger", "forged"), "forged header")
check(mt.abort(conn), "abort")
check(mt.mailfrom(conn, "<a@example.org>"), "mail 2")
check(mt.eom(conn), "eom")
expect_continue(conn, "eom")
if mt.eom_check(conn, MT_HDRDELETE) then
    fail("the aborted message's forged header leaked into the next message")
end
check(mt.mailfrom(conn, "<a@example.org>"), "mail 3")
check(mt.header(conn, "Subject", "cut off"), "header")
mt.disconnect(conn, false)
