# Generates tests/data/report/mail.log (deterministic; see tests/data/report/README.md).
lines = []
pid = [1000]
qn = [0]
def nextpid():
    pid[0] += 1
    return pid[0]
def qid():
    qn[0] += 1
    return f"R{qn[0]:09X}"
def L(ts, prog, p, msg):
    lines.append(f"{ts}+00:00 out postfix/{prog}[{p}]: {msg}")
def tls_delivery(day, hm, trust, host, ip, proto, cipher, bits, domain, n_msgs=1, reused=False):
    ts = f"2026-11-{day:02d}T{hm}:00"
    p = nextpid()
    verb = "reused" if reused else "established"
    L(ts, "smtp", p, f"{trust} TLS connection {verb} to {host}[{ip}]:25: {proto} with cipher {cipher} ({bits}/{bits} bits)")
    for i in range(n_msgs):
        cu = ", conn_use=2" if i > 0 else ""
        L(f"2026-11-{day:02d}T{hm}:0{i+1}", "smtp", p, f"{qid()}: to=<user@{domain}>, relay={host}[{ip}]:25{cu}, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 2.0.0 Ok)")
def plain_delivery(day, hm, host, ip, domain):
    p = nextpid()
    L(f"2026-11-{day:02d}T{hm}:01", "smtp", p, f"{qid()}: to=<user@{domain}>, relay={host}[{ip}]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 2.0.0 Ok)")
def failure_then_plaintext(day, hm, host, ip, domain):
    p = nextpid()
    ts = f"2026-11-{day:02d}T{hm}:00"
    L(ts, "smtp", p, f"SSL_connect error to {host}[{ip}]:25: -1")
    L(ts, "smtp", p, "warning: TLS library problem: error:0A000410:SSL routines::sslv3 alert handshake failure:../ssl/record/rec_layer_s3.c:1584:SSL alert number 40:")
    L(f"2026-11-{day:02d}T{hm}:02", "smtp", p, f"{qid()}: to=<user@{domain}>, relay={host}[{ip}]:25, delay=2, delays=0/0/1/1, dsn=2.0.0, status=sent (250 2.0.0 Ok)")
def failure_deferred(day, hm, host, ip, domain):
    p = nextpid()
    L(f"2026-11-{day:02d}T{hm}:00", "smtp", p, f"SSL_connect error to {host}[{ip}]:25: lost connection")
    L(f"2026-11-{day:02d}T{hm}:01", "smtp", p, f"{qid()}: to=<user@{domain}>, relay={host}[{ip}]:25, delay=1, delays=0/0/0.5/0.5, dsn=4.7.5, status=deferred (Cannot start TLS: handshake failure)")
def inbound(day, hm, tls):
    p = nextpid()
    ts = f"2026-11-{day:02d}T{hm}"
    L(f"{ts}:00", "smtpd", p, "connect from client.example[198.51.100.7]")
    if tls:
        L(f"{ts}:00", "smtpd", p, "Anonymous TLS connection established from client.example[198.51.100.7]: TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits)")
    q = qid()
    L(f"{ts}:01", "smtpd", p, f"{q}: client=client.example[198.51.100.7]")
    counters = "ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7" if tls else "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"
    L(f"{ts}:02", "smtpd", p, f"disconnect from client.example[198.51.100.7] {counters}")

A = ("mx.valid.example", "192.0.2.10", "valid.example")
B = ("mx.old.example", "192.0.2.20", "old.example")
C = ("mx.mixed.example", "192.0.2.30", "mixed.example")
D = ("mx.broken.example", "192.0.2.40", "broken.example")
E = ("mx.flaky.example", "192.0.2.50", "flaky.example")
F = ("mx.cert.example", "192.0.2.60", "cert.example")
events = []  # (sort key, thunk)
def at(day, hm, f):
    events.append(((day, hm, len(events)), f))
# Baseline period (before the report range): A, F and the inbound client G every day.
for day in range(10, 23):
    at(day, "10:00", lambda d=day: tls_delivery(d, "10:00", "Trusted", *A[:2], "TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, A[2]))
    at(day, "10:10", lambda d=day: tls_delivery(d, "10:10", "Verified", *F[:2], "TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384", 256, F[2]))
    at(day, "10:20", lambda d=day: inbound(d, "10:20", True))
# The report range: 2026-11-23 to 2026-11-29.
for day in range(23, 28):
    at(day, "10:00", lambda d=day: tls_delivery(d, "10:00", "Trusted", *A[:2], "TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, A[2]))
at(27, "11:00", lambda: tls_delivery(27, "11:00", "Trusted", *A[:2], "TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, A[2], reused=True))
at(28, "10:00", lambda: plain_delivery(28, "10:00", *A))
at(24, "11:00", lambda: tls_delivery(24, "11:00", "Untrusted", *B[:2], "TLSv1", "ECDHE-RSA-AES256-SHA", 256, B[2]))
at(25, "11:00", lambda: tls_delivery(25, "11:00", "Untrusted", *B[:2], "TLSv1", "ECDHE-RSA-AES256-SHA", 256, B[2]))
at(26, "11:00", lambda: tls_delivery(26, "11:00", "Untrusted", *B[:2], "TLSv1.1", "ECDHE-RSA-AES256-SHA", 256, B[2]))
at(26, "12:00", lambda: tls_delivery(26, "12:00", "Untrusted", *B[:2], "TLSv1.1", "ECDHE-RSA-AES256-SHA", 256, B[2], n_msgs=2))
at(24, "12:00", lambda: tls_delivery(24, "12:00", "Verified", *C[:2], "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", 128, C[2]))
at(25, "12:00", lambda: tls_delivery(25, "12:00", "Verified", *C[:2], "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", 128, C[2]))
at(26, "13:00", lambda: tls_delivery(26, "13:00", "Verified", *C[:2], "TLSv1", "ECDHE-RSA-AES256-SHA", 256, C[2]))
at(25, "10:30", lambda: failure_then_plaintext(25, "10:30", *D))
at(25, "14:30", lambda: failure_then_plaintext(25, "14:30", *D))
at(23, "15:00", lambda: tls_delivery(23, "15:00", "Untrusted", *E[:2], "TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384", 256, E[2]))
at(26, "15:00", lambda: failure_deferred(26, "15:00", *E))
at(28, "15:00", lambda: failure_deferred(28, "15:00", *E))
at(28, "23:00", lambda: failure_deferred(28, "23:00", *E))
at(24, "10:10", lambda: tls_delivery(24, "10:10", "Untrusted", *F[:2], "TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384", 256, F[2]))
at(25, "10:10", lambda: tls_delivery(25, "10:10", "Verified", *F[:2], "TLSv1", "ECDHE-RSA-AES256-SHA", 256, F[2]))
for day in (23, 24, 25):
    at(day, "10:20", lambda d=day: inbound(d, "10:20", True))
at(26, "10:20", lambda: inbound(26, "10:20", False))
for _, f in sorted(events, key=lambda e: e[0]):
    f()
open(__import__("os").path.join(__import__("os").path.dirname(__file__), "mail.log"), "w").write("\n".join(lines) + "\n")
print(len(lines))
