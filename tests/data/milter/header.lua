-- header.lua: a Postfix session with STARTTLS after a first EHLO and two messages. The first
-- message carries two forged copies of X-TLSLedger (different case), which must be deleted;
-- the second none. Both get the milter's own header with the session's TLS.
local conn = open()
if not mt.test_action(conn, SMFIF_ADDHDRS) or not mt.test_action(conn, SMFIF_CHGHDRS) then
    fail("add/change header actions not requested")
end
postfix_connect(conn, "client.example.org", "192.0.2.7")
-- The first EHLO comes before STARTTLS: no TLS macros.
check(mt.helo(conn, "client.example.org"), "helo")
mt.macro(conn, SMFIC_HELO, "{tls_version}", "TLSv1.3", "{cipher}", "TLS_AES_256_GCM_SHA384", "{cipher_bits}", "256")
check(mt.helo(conn, "client.example.org"), "helo after STARTTLS")

local want = "class=unknown; flags=none; severity=none; tls=TLSv1.3; cipher=TLS_AES_256_GCM_SHA384"
mt.macro(conn, SMFIC_MAIL, "i", "4ABC1", "{tls_version}", "TLSv1.3", "{cipher}", "TLS_AES_256_GCM_SHA384", "{cipher_bits}", "256")
check(mt.mailfrom(conn, "<a@example.org>"), "mail 1")
check(mt.header(conn, "Subject", "first"), "header")
check(mt.header(conn, "X-TLSLedger", "class=historically-valid; flags=none; severity=none"), "forged header")
check(mt.header(conn, "x-tlsledger", "class=historically-valid"), "forged header, other case")
check(mt.eom(conn), "eom 1")
expect_continue(conn, "eom 1")
if not mt.eom_check(conn, MT_HDRDELETE, "X-TLSLedger") then
    fail("forged copies not deleted")
end
if not mt.eom_check(conn, MT_HDRADD, "X-TLSLedger", want) then
    fail("header not added: " .. tostring(mt.getheader(conn, "X-TLSLedger", 0)))
end

mt.macro(conn, SMFIC_MAIL, "i", "4ABC2", "{tls_version}", "TLSv1.3", "{cipher}", "TLS_AES_256_GCM_SHA384", "{cipher_bits}", "256")
check(mt.mailfrom(conn, "<a@example.org>"), "mail 2")
check(mt.header(conn, "Subject", "second"), "header")
check(mt.eom(conn), "eom 2")
expect_continue(conn, "eom 2")
if mt.eom_check(conn, MT_HDRDELETE) then
    fail("a header was deleted from a message without forged copies")
end
if not mt.eom_check(conn, MT_HDRADD, "X-TLSLedger", want) then
    fail("header not added to the second message")
end
mt.disconnect(conn)
