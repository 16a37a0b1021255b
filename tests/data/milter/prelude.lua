-- prelude.lua: prepended to every scenario of tests/it/milter.rs.
-- miltertest stops at the first Lua error without printing it, so failures echo first.
function fail(message)
    mt.echo("FAIL: " .. message)
    error(message)
end

function check(result, what)
    if result ~= nil then
        fail(what .. ": " .. tostring(result))
    end
end

-- Connects to MILTER_SOCKET (retrying while the milter starts) and negotiates with
-- miltertest's defaults: every action and step offered, like a recent Postfix.
function open()
    local sock = os.getenv("MILTER_SOCKET")
    local conn = mt.connect(sock, 100, 0.05)
    if conn == nil then
        fail("cannot connect to " .. sock)
    end
    check(mt.negotiate(conn, nil, nil, nil), "negotiate")
    return conn
end

-- The macros Postfix sends at connect (the ones tlsledger asks for).
function postfix_connect(conn, host, ip)
    mt.macro(conn, SMFIC_CONNECT, "j", "mx.example.net", "{daemon_name}", "smtpd", "v", "Postfix 3.7.11")
    check(mt.conninfo(conn, host, ip), "conninfo")
end

function expect_continue(conn, what)
    if mt.getreply(conn) ~= SMFIR_CONTINUE then
        fail(what .. ": reply " .. tostring(mt.getreply(conn)) .. " instead of continue")
    end
end
