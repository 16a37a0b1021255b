#!/usr/bin/env python3
"""Generate a large, deterministic, realistic Postfix mail log for parser benchmarks.

The log imitates a busy relay (hostname ``mx1``) that receives mail over SMTP,
hands it to its queue manager and relays it to thousands of remote MX hosts.
Concurrent SMTP sessions of a few hundred ``smtp`` and ``smtpd`` processes are
interleaved line by line, the way syslog sees them.

Every SMTP session is built as an ordered list of lines (an "episode"), and the
writer advances a random active episode for each output line.  Each episode
reserves its process ids while it runs, so lines from one pid never interleave
between two sessions; this is the property that a per-pid correlator relies on.

Content mix (the templates follow the research notes FORMATS.md, sections 2.2-2.5):
  * inbound smtpd sessions: ``connect from``, the TLS summary line (or plaintext),
    ``QID: client=``, ``disconnect from ... commands=N``;
  * outbound smtp sessions: ``<Class> TLS connection established to``, then one
    to three delivery lines (sent, deferred or bounced; ``conn_use=N`` when a
    cached connection is reused; ``tls=...`` from a second Postfix >= 3.11
    instance called ``postfix-out``), plaintext deliveries, ``SSL_connect error``
    followed by ``warning: TLS library problem`` and a deferral or a plaintext
    retry, and connection time-outs;
  * the non-TLS noise of a real log: cleanup ``message-id=``, qmgr ``from=`` and
    ``removed``, pickup, bounce, lmtp and local deliveries, smtpd rejects and lost
    connections, ``SSL_accept error``, anvil and scache statistics, warnings.

The same seed and size always give a byte-identical file.  Sizes are in units of
10^6 bytes; the output stops at the first line boundary after the requested size.

Usage:
    bench/gen-postfix-log.py --size-mb 520 --out bench/out/postfix-bench.log
    bench/gen-postfix-log.py --size-mb 10 --framing 3164 --seed 7 --out small.log
"""

import argparse
import calendar
import random
import sys
import time

# The simulated log starts at this UTC instant.  At the default mean gap of 25 ms
# per line, 3 million lines span about 21 hours, so the log crosses into December
# and exercises the space-padded day of RFC 3164 ("Dec  1").
START = calendar.timegm((2026, 11, 30, 13, 35, 12, 0, 0, 0))
MEAN_GAP_US = 25_000
HOSTNAME = "mx1"
MONTHS = ["", "Jan", "Feb", "Mar", "Apr", "May", "Jun",
          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
OUR_DOMAIN = "example-relay.net"

# Lines are buffered and written in chunks of about this many characters.
CHUNK_CHARS = 8 << 20


def parse_args():
    """Parse the command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=520,
                    help="target size in MB (10^6 bytes), default 520")
    ap.add_argument("--out", default="-", help="output file, default stdout")
    ap.add_argument("--seed", type=int, default=1, help="random seed, default 1")
    ap.add_argument("--framing", choices=["3339", "3164"], default="3339",
                    help="3339: rsyslog RFC 3339 timestamps (default); "
                         "3164: traditional 'Nov 30 13:35:12' timestamps")
    return ap.parse_args()


class Names:
    """Deterministic pools of domains, hosts, addresses and local parts."""

    SYL = ["ka", "lo", "mi", "ra", "ten", "vo", "sun", "del", "bri", "mar", "qu",
           "xan", "po", "ly", "fer", "gen", "tor", "ba", "ne", "zi", "hal", "op",
           "ri", "sta", "mo", "cor", "pex", "ul", "an", "dor", "wi", "tel"]
    TLDS = ["com"] * 10 + ["net"] * 3 + ["org"] * 2 + ["de"] * 3 + ["fr", "nl", "it",
            "co.uk", "io", "ch", "se", "pl", "es", "at", "be", "cz", "jp", "com.br"]
    FIRST = ["alice", "bob", "carol", "dave", "eve", "frank", "grace", "heidi",
             "ivan", "judy", "mallory", "niaj", "olivia", "peggy", "rupert",
             "sybil", "trent", "victor", "walter", "info", "sales", "support",
             "billing", "noreply", "newsletter", "admin", "hr", "jobs", "office"]

    def __init__(self, rng):
        self.rng = rng
        seen = set()
        self.domains = []
        while len(self.domains) < 6000:
            name = "".join(rng.choice(self.SYL) for _ in range(rng.randint(2, 4)))
            dom = name + "." + rng.choice(self.TLDS)
            if dom not in seen:
                seen.add(dom)
                self.domains.append(dom)
        self.locals = [f + s for f in self.FIRST
                       for s in ["", "", "", ".smith", ".jones", "1", "42", "_m",
                                 ".mueller", ".dupont", "2024", ".k"]]

    def ipv4(self):
        """Return a public-looking IPv4 address."""
        r = self.rng
        first = r.choice([5, 23, 31, 37, 45, 46, 50, 62, 77, 78, 80, 81, 82, 85,
                          87, 88, 91, 93, 94, 95, 103, 104, 109, 116, 128, 136,
                          139, 141, 144, 146, 149, 151, 159, 162, 164, 167, 168,
                          172, 176, 178, 185, 188, 192, 193, 194, 195, 198, 199,
                          202, 203, 205, 207, 208, 209, 212, 213, 217])
        return "%d.%d.%d.%d" % (first, r.randrange(256), r.randrange(256),
                                r.randrange(1, 255))

    def ipv6(self):
        """Return a global-unicast-looking IPv6 address in compressed form."""
        r = self.rng
        head = r.choice(["2a00:1450", "2a01:4f8", "2001:41d0", "2a02:c207",
                         "2604:a880", "2a03:b0c0", "2001:67c", "2a0a:51c0"])
        return "%s:%x:%x::%x" % (head, r.randrange(1, 0xffff), r.randrange(0xffff),
                                 r.randrange(1, 0xfff))

    def address(self, domain=None):
        """Return an e-mail address, at a random domain unless one is given."""
        r = self.rng
        return "%s@%s" % (r.choice(self.locals), domain or r.choice(self.domains))


# TLS summary tails ("<proto> with cipher ..."), with weights, as logged by
# Postfix 3.4+ with OpenSSL 1.1.1/3.x.  The outbound side names the server's
# signature; the inbound side names ours, which is fixed per server.
OUT_TLS_TAILS = [
    (40, "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256"),
    (8, "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (4096 bits) server-digest SHA256"),
    (8, "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256"),
    (4, "TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256"),
    (3, "TLSv1.3 with cipher TLS_CHACHA20_POLY1305_SHA256 (256/256 bits) key-exchange X25519 server-signature ECDSA (secp384r1) server-digest SHA384"),
    (3, "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519MLKEM768 server-signature RSA-PSS (2048 bits) server-digest SHA256"),
    (2, "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange secp384r1 server-signature RSA-PSS (3072 bits) server-digest SHA256"),
    (10, "TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)"),
    (6, "TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits) key-exchange X25519 server-signature RSA (2048 bits) server-digest SHA256"),
    (3, "TLSv1.2 with cipher ECDHE-ECDSA-AES256-GCM-SHA384 (256/256 bits) key-exchange ECDHE (P-256) server-signature ECDSA (P-256) server-digest SHA256"),
    (2, "TLSv1.2 with cipher ECDHE-RSA-CHACHA20-POLY1305 (256/256 bits)"),
    (2, "TLSv1.2 with cipher DHE-RSA-AES256-GCM-SHA384 (256/256 bits)"),
    (1, "TLSv1 with cipher ECDHE-RSA-AES256-SHA (256/256 bits)"),
]
# Anonymous outbound sessions use aNULL ciphers, which exist only below TLS 1.3.
ANON_OUT_TAILS = [
    (3, "TLSv1.2 with cipher ADH-AES256-GCM-SHA384 (256/256 bits)"),
    (1, "TLSv1.2 with cipher AECDH-AES256-SHA (256/256 bits)"),
]
IN_TLS_TAILS = [
    (60, "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256"),
    (8, "TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256"),
    (4, "TLSv1.3 with cipher TLS_CHACHA20_POLY1305_SHA256 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256"),
    (15, "TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)"),
    (5, "TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits)"),
    (1, "TLSv1 with cipher ECDHE-RSA-AES256-SHA (256/256 bits)"),
]
# A few inbound clients present a certificate, which adds a client signature.
CLIENT_SIG = " client-signature ECDSA (prime256v1) client-digest SHA256"

# OpenSSL 3 error strings for "warning: TLS library problem: ...".
SSL_CLIENT_ERRORS = [
    "error:0A000086:SSL routines::certificate verify failed:../ssl/statem/statem_clnt.c:1889:",
    "error:0A000410:SSL routines::sslv3 alert handshake failure:../ssl/record/rec_layer_s3.c:1584:SSL alert number 40",
    "error:0A00010B:SSL routines::wrong version number:../ssl/record/ssl3_record.c:354:",
    "error:0A000126:SSL routines::unexpected eof while reading:../ssl/record/rec_layer_s3.c:308:",
    "error:0A000102:SSL routines::unsupported protocol:../ssl/statem/statem_lib.c:1987:",
]
SSL_SERVER_ERRORS = [
    "error:0A000076:SSL routines::no suitable signature algorithm:../ssl/statem/statem_srvr.c:2283:",
    "error:0A0000C1:SSL routines::no shared cipher:../ssl/statem/statem_srvr.c:2283:",
    "error:0A00010B:SSL routines::wrong version number:../ssl/record/ssl3_record.c:354:",
    "error:0A000412:SSL routines::sslv3 alert bad certificate:../ssl/record/rec_layer_s3.c:1584:SSL alert number 42",
    "error:0A000102:SSL routines::unsupported protocol:../ssl/statem/statem_srvr.c:1657:",
]

# Large providers receive and send a big share of the traffic, the way real
# relays see Zipf-like destination counts.  Fields: MX host names, recipient
# domains, IPv4 prefix, IPv6 prefix (or None), class, TLS tail, 250 reply style.
PROVIDERS = [
    (["gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com", "alt2.gmail-smtp-in.l.google.com"],
     ["gmail.com", "googlemail.com"], "142.250.%d.%d", "2a00:1450:400c:c0%x::1b", "Trusted",
     "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256", "google"),
    (["hotmail-com.olc.protection.outlook.com", "outlook-com.olc.protection.outlook.com"],
     ["hotmail.com", "outlook.com", "live.com", "msn.com"], "52.101.%d.%d", None, "Trusted",
     "TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)", "outlook"),
    (["mta5.am0.yahoodns.net", "mta6.am0.yahoodns.net", "mta7.am0.yahoodns.net"],
     ["yahoo.com", "yahoo.fr", "aol.com"], "67.195.%d.%d", None, "Trusted",
     "TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256", "postfix"),
    (["mx01.mail.icloud.com", "mx02.mail.icloud.com"], ["icloud.com", "me.com"],
     "17.57.%d.%d", None, "Trusted",
     "TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)", "postfix"),
    (["mx00.emig.gmx.net", "mx01.emig.gmx.net", "mx-ha03.web.de"], ["gmx.de", "gmx.net", "web.de"],
     "212.227.%d.%d", None, "Verified",
     "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (4096 bits) server-digest SHA256", "postfix"),
    (["mx1.mail.ovh.net", "mx2.mail.ovh.net"], ["ovh.net"], "188.165.%d.%d", "2001:41d0:1:%x::1", "Untrusted",
     "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256", "postfix"),
    (["mail.protonmail.ch", "mailsec.protonmail.ch"], ["proton.me", "protonmail.com"], "185.70.%d.%d", None, "Verified",
     "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256", "postfix"),
    (["smtp-in.orange.fr"], ["orange.fr", "wanadoo.fr"], "193.252.%d.%d", None, "Untrusted",
     "TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)", "postfix"),
]


def weighted(rng, pairs):
    """Pick a value from a list of (weight, value) pairs."""
    total = sum(w for w, _ in pairs)
    x = rng.random() * total
    for w, v in pairs:
        x -= w
        if x < 0:
            return v
    return pairs[-1][1]


class Peer:
    """A remote MX host as our smtp client sees it, with a fixed TLS profile."""

    __slots__ = ("name", "port", "domains", "tls_msg", "relay", "bare", "style",
                 "tls", "flaky")

    def __init__(self, name, ip, port, domains, cls, tail, style, tls, flaky):
        self.name = name
        self.port = port
        self.domains = domains
        # "host[ip]:port" is what both the TLS line and relay= carry.
        self.relay = "%s[%s]:%d" % (name, ip, port)
        # "[host]" without the address, for reasons like "host X said: ...".
        self.bare = "%s[%s]" % (name, ip)
        self.tls_msg = "%s TLS connection established to %s: %s" % (cls, self.relay, tail)
        self.style = style
        # tls: whether the peer offers STARTTLS; flaky: whether the handshake fails.
        self.tls = tls
        self.flaky = flaky


class Client:
    """A remote SMTP client as our smtpd server sees it."""

    __slots__ = ("namaddr", "tls_msg", "helo")

    def __init__(self, name, ip, tls_msg_tail, helo):
        self.namaddr = "%s[%s]" % (name, ip)
        self.tls_msg = None
        if tls_msg_tail:
            self.tls_msg = "%s TLS connection established from %s: %s" % (
                tls_msg_tail[0], self.namaddr, tls_msg_tail[1])
        self.helo = helo


class PidPool:
    """A set of process ids with O(1) random take and give-back.

    A returned pid is retired and replaced by a fresh one now and then, the way
    Postfix daemons exit after max_use requests and master(8) forks new ones.
    """

    def __init__(self, rng, counter, n):
        self.rng = rng
        self.counter = counter
        self.free = [counter.next() for _ in range(n)]

    def take(self):
        """Take a random free pid."""
        free = self.free
        i = self.rng.randrange(len(free))
        pid = free[i]
        free[i] = free[-1]
        free.pop()
        return pid

    def take_specific(self, pid):
        """Take the given pid if it is free; return whether it was."""
        free = self.free
        try:
            i = free.index(pid)
        except ValueError:
            return False
        free[i] = free[-1]
        free.pop()
        return True

    def give(self, pid):
        """Return a pid, sometimes replacing it by a newly forked process."""
        if self.rng.random() < 0.01:
            pid = self.counter.next()
        self.free.append(pid)


class PidCounter:
    """Increasing pid allocator that wraps like Linux pid_max.

    The step is random because other programs on the host fork processes too.
    """

    def __init__(self, rng, start):
        self.rng = rng
        self.pid = start

    def next(self):
        """Return the pid of the next forked process."""
        self.pid += self.rng.randrange(1, 40)
        if self.pid > 4_194_304:
            self.pid = 300 + self.pid % 1000
        return self.pid


class Generator:
    """Builds episodes and interleaves them into framed syslog lines."""

    def __init__(self, seed, framing):
        self.rng = rng = random.Random(seed)
        self.framing = framing
        self.names = Names(rng)
        self.counter = PidCounter(rng, rng.randrange(1000, 50_000))
        self.smtp_pids = PidPool(rng, self.counter, 300)
        self.smtpd_pids = PidPool(rng, self.counter, 200)
        self.out_smtp_pids = PidPool(rng, self.counter, 80)
        self.lmtp_pids = PidPool(rng, self.counter, 20)
        self.cleanup_pids = [self.counter.next() for _ in range(12)]
        self.bounce_pids = [self.counter.next() for _ in range(3)]
        self.p = {}
        for proc in ["qmgr", "pickup", "anvil", "scache", "local", "out-qmgr",
                     "out-pickup"]:
            self.p[proc] = self.counter.next()
        self.build_peers()
        self.build_clients()
        self.build_pools()
        # Connection cache: peer index -> (pid, last use in us, uses so far),
        # and pid -> the peer its cached connection belongs to.
        self.cache = {}
        self.pid_peer = {}
        self.now_us = START * 1_000_000
        self.next_stats_us = self.now_us + 600_000_000

    # ----------------------------------------------------------------- pools

    def build_peers(self):
        """Create the remote MX hosts: big providers first, then small domains."""
        rng, nm = self.rng, self.names
        self.big_peers = []
        for hosts, doms, v4, v6, cls, tail, style in PROVIDERS:
            for k in range(12):
                host = hosts[k % len(hosts)]
                if v6 and k % 3 == 0:
                    ip = v6 % rng.randrange(1, 16)
                else:
                    ip = v4 % (rng.randrange(256), rng.randrange(1, 255))
                self.big_peers.append(Peer(host, ip, 25, doms, cls, tail, style,
                                           True, False))
        self.small_peers = []
        for dom in nm.domains:
            host = rng.choice(["mx1.", "mx.", "mail.", "smtp.", "mx01.", "mx2."]) + dom
            ip = nm.ipv6() if rng.random() < 0.08 else nm.ipv4()
            cls = weighted(rng, [(55, "Trusted"), (30, "Untrusted"), (12, "Verified"),
                                 (3, "Anonymous")])
            tail = weighted(rng, ANON_OUT_TAILS if cls == "Anonymous" else OUT_TLS_TAILS)
            tls = rng.random() < 0.93
            flaky = tls and rng.random() < 0.04
            self.small_peers.append(Peer(host, ip, 25, [dom], cls, tail, "postfix",
                                         tls, flaky))
        # Smarthosts on submission ports carry a small share of the traffic.
        self.smarthosts = [
            Peer("smtp.sendgrid.net", "167.89.%d.%d" % (rng.randrange(256), rng.randrange(1, 255)),
                 587, None, "Trusted", OUT_TLS_TAILS[0][1], "postfix", True, False),
            Peer("smtp.mailgun.org", "143.55.%d.%d" % (rng.randrange(256), rng.randrange(1, 255)),
                 587, None, "Trusted", OUT_TLS_TAILS[7][1], "postfix", True, False),
            Peer("relay.mailchannels.net", "23.83.%d.%d" % (rng.randrange(256), rng.randrange(1, 255)),
                 2525, None, "Verified", OUT_TLS_TAILS[1][1], "postfix", True, False),
            Peer("127.0.0.1", "127.0.0.1", 10025, None, "Untrusted", OUT_TLS_TAILS[0][1],
                 "postfix", False, False),
        ]
        self.all_peers = self.big_peers + self.small_peers + self.smarthosts
        self.peer_index = {id(p): i for i, p in enumerate(self.all_peers)}

    def build_clients(self):
        """Create the remote SMTP clients that connect to our smtpd."""
        rng, nm = self.rng, self.names
        self.clients = []
        google = [("mail-%s%d-f%d.google.com" % (rng.choice(["wm", "ej", "lj", "pl", "qt"]),
                                                  rng.randrange(1, 2), rng.randrange(40, 200)),
                   "209.85.%d.%d" % (rng.randrange(128, 256), rng.randrange(1, 255)))
                  for _ in range(150)]
        google += [("mail-%s1-x%d.google.com" % (rng.choice(["wm", "ej", "pl"]), rng.randrange(100, 999)),
                    "2a00:1450:4864:20::%x" % rng.randrange(0x100, 0xfff)) for _ in range(40)]
        outlook = [("mail-%s.outbound.protection.outlook.com" % rng.choice(
                        ["db8eur05on2081", "am0pr02cu008", "vi1eur04on2045", "he1eur04on2118"]),
                    "40.107.%d.%d" % (rng.randrange(256), rng.randrange(1, 255))) for _ in range(120)]
        for name, ip in google + outlook:
            tail = weighted(rng, IN_TLS_TAILS[:3])
            self.clients.append(Client(name, ip, ("Anonymous", tail), name))
        self.n_big_clients = len(self.clients)
        for _ in range(8000):
            dom = rng.choice(nm.domains)
            if rng.random() < 0.3:
                name = "unknown"
            else:
                name = rng.choice(["mail.", "mx.", "smtp.", "out.", "mta1.", "srv%d." % rng.randrange(1, 99)]) + dom
            ip = nm.ipv6() if rng.random() < 0.06 else nm.ipv4()
            r = rng.random()
            if r < 0.15:
                tls = None
            elif r < 0.17:
                tls = (rng.choice(["Trusted", "Untrusted", "Verified"]),
                       weighted(rng, IN_TLS_TAILS[:3]) + CLIENT_SIG)
            else:
                tls = ("Anonymous", weighted(rng, IN_TLS_TAILS))
            self.clients.append(Client(name, ip, tls, "mail." + dom))

    def build_pools(self):
        """Precompute delay strings, sizes and other repeated fragments."""
        rng = self.rng
        self.delays_ok = []
        for _ in range(4096):
            a, b = rng.choice([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.1, 3.4]), rng.choice([0, 0, 0.01, 0.02])
            c, d = rng.choice([0.02, 0.05, 0.1, 0.2, 0.5, 1.3]), rng.choice([0.03, 0.1, 0.2, 0.6, 1.5])
            total = a + b + c + d
            self.delays_ok.append("delay=%.2g, delays=%g/%g/%g/%g" % (total, a, b, c, d))
        self.delays_timeout = ["delay=%d, delays=%g/0/30/0" % (30 + k, k + 0.01) for k in range(0, 3000, 7)]
        self.sizes = [int(rng.lognormvariate(9.8, 1.1)) + 500 for _ in range(4096)]

    # --------------------------------------------------------------- helpers

    def qid(self):
        """A classic Postfix queue id: 10 to 12 upper-case hex digits."""
        n = self.rng.choice((10, 11, 11, 12))
        return "%0*X" % (n, self.rng.getrandbits(4 * n))

    def msgid(self):
        """A Message-ID header value."""
        r = self.rng
        return "<%d.%x@%s>" % (r.getrandbits(40), r.getrandbits(48), r.choice(self.names.domains))

    def prefix(self, tag, pid):
        """The part of a line between the timestamp and the message."""
        return " %s %s[%d]: " % (HOSTNAME, tag, pid)

    def pick_peer(self):
        """Choose a destination MX, skewed toward the large providers."""
        r = self.rng.random()
        if r < 0.40:
            return self.rng.choice(self.big_peers)
        if r < 0.44:
            return self.rng.choice(self.smarthosts)
        return self.rng.choice(self.small_peers)

    def pick_client(self):
        """Choose a connecting client, skewed toward the large providers."""
        if self.rng.random() < 0.35:
            return self.clients[self.rng.randrange(self.n_big_clients)]
        return self.rng.choice(self.clients)

    def reply(self, peer, qid2):
        """The remote 250 reply text for a successful delivery."""
        if peer.style == "google":
            return "250 2.0.0 OK  %d %x.%d - gsmtp" % (1764000000 + self.rng.randrange(10**6),
                                                     self.rng.getrandbits(64), self.rng.randrange(1000))
        if peer.style == "outlook":
            return ("250 2.6.0 %s [InternalId=%d, Hostname=AM0PR02MB%d.eurprd02.prod.outlook.com] "
                    "Queued mail for delivery" % (self.msgid(), self.rng.getrandbits(40), self.rng.randrange(1000, 9999)))
        return "250 2.0.0 Ok: queued as " + qid2

    # -------------------------------------------------------------- episodes

    def inbound(self, lines, cl, in_pid, qid, nrcpt, tag="postfix/smtpd"):
        """Append an inbound smtpd session that queues one message."""
        sp = self.prefix(tag, in_pid)
        lines.append((sp, "connect from " + cl.namaddr))
        tls = cl.tls_msg is not None
        if tls:
            lines.append((sp, cl.tls_msg))
        if tag == "postfix/submission/smtpd":
            lines.append((sp, "%s: client=%s, sasl_method=PLAIN, sasl_username=%s"
                          % (qid, cl.namaddr, self.names.address(OUR_DOMAIN))))
        else:
            lines.append((sp, "%s: client=%s" % (qid, cl.namaddr)))
        lines.append((self.prefix("postfix/cleanup", self.rng.choice(self.cleanup_pids)),
                      "%s: message-id=%s" % (qid, self.msgid())))
        lines.append((self.prefix("postfix/qmgr", self.p["qmgr"]),
                      "%s: from=<%s>, size=%d, nrcpt=%d (queue active)"
                      % (qid, self.names.address(), self.rng.choice(self.sizes), nrcpt)))
        # The disconnect line counts each SMTP command; "starttls=1" marks TLS.
        commands = 4 + nrcpt
        stats = "ehlo=1 "
        if tls:
            stats = "ehlo=2 starttls=1 "
            commands += 2
        if tag == "postfix/submission/smtpd":
            stats += "auth=1 "
            commands += 1
        stats += "mail=1 rcpt=%d data=1 quit=1 commands=%d" % (nrcpt, commands)
        lines.append((sp, "disconnect from %s %s" % (cl.namaddr, stats)))

    def outbound(self, lines, peer, pid, qid, rcpts, inst="postfix", conn_use=0):
        """Append an outbound smtp session delivering one message to one peer.

        Returns True if every recipient reached a final state (sent or bounced),
        which is when qmgr logs "removed".
        """
        rng = self.rng
        sp = self.prefix(inst + "/smtp", pid)
        new_postfix = inst == "postfix-out"
        relay = peer.relay
        if not peer.tls:
            return self.deliveries(lines, sp, peer, qid, rcpts, False, new_postfix, conn_use)
        if peer.flaky and conn_use == 0 and rng.random() < 0.7:
            err = rng.choice(["-1", "-1", "-1", "lost connection", "Connection reset by peer", "0"])
            lines.append((sp, "SSL_connect error to %s: %s" % (relay, err)))
            if err in ("-1", "0"):
                lines.append((sp, "warning: TLS library problem: " + rng.choice(SSL_CLIENT_ERRORS)))
            if rng.random() < 0.6:
                delays = rng.choice(self.delays_ok)
                tls = ", tls=may?" if new_postfix else ""
                for rc in rcpts:
                    lines.append((sp, "%s: to=<%s>, relay=%s, %s%s, dsn=4.7.5, status=deferred "
                                  "(Cannot start TLS: handshake failure)" % (qid, rc, relay, delays, tls)))
                return False
            # At security level "may" the client retries the delivery in plaintext.
            return self.deliveries(lines, sp, peer, qid, rcpts, False, new_postfix, 0)
        if conn_use == 0:
            lines.append((sp, peer.tls_msg))
        return self.deliveries(lines, sp, peer, qid, rcpts, True, new_postfix, conn_use)

    def deliveries(self, lines, sp, peer, qid, rcpts, tls, new_postfix, conn_use):
        """Append one delivery line per recipient; return whether all are final."""
        rng = self.rng
        relay = peer.relay
        delays = rng.choice(self.delays_ok)
        cu = ", conn_use=%d" % conn_use if conn_use > 1 else ""
        tf = ""
        if new_postfix:
            tf = (", tls=dane" if "Verified" in peer.tls_msg else ", tls=may") if tls else ", tls=may:none"
        final = True
        for rc in rcpts:
            r = rng.random()
            if r < 0.93:
                status = "dsn=2.0.0, status=sent (%s)" % self.reply(peer, self.qid())
            elif r < 0.97:
                final = False
                status = ("dsn=4.2.0, status=deferred (host %s said: 450 4.2.0 <%s>: Recipient address "
                          "rejected: Greylisted, see https://postgrey.schweikert.ch/help/%s.html "
                          "(in reply to RCPT TO command))" % (peer.bare, rc, rc.split("@")[1]))
            else:
                status = ("dsn=5.1.1, status=bounced (host %s said: 550 5.1.1 <%s>: Recipient address "
                          "rejected: User unknown in virtual mailbox table (in reply to RCPT TO command))"
                          % (peer.bare, rc))
                lines.append((sp, "%s: to=<%s>, relay=%s%s, %s%s, %s" % (qid, rc, relay, cu, delays, tf, status)))
                lines.append((self.prefix("postfix/bounce", rng.choice(self.bounce_pids)),
                              "%s: sender non-delivery notification: %s" % (qid, self.qid())))
                continue
            lines.append((sp, "%s: to=<%s>, relay=%s%s, %s%s, %s" % (qid, rc, relay, cu, delays, tf, status)))
        return final

    def connect_timeout(self, lines, peer, pid, qid, rcpts):
        """Append a failed TCP connection and the resulting deferrals."""
        sp = self.prefix("postfix/smtp", pid)
        why = self.rng.choice(["Connection timed out", "Connection refused", "No route to host"])
        lines.append((sp, "connect to %s: %s" % (peer.relay, why)))
        delays = self.rng.choice(self.delays_timeout)
        for rc in rcpts:
            lines.append((sp, "%s: to=<%s>, relay=none, %s, dsn=4.4.1, status=deferred (connect to %s: %s)"
                          % (qid, rc, delays, peer.relay, why)))

    def take_smtp(self, peer, pool):
        """Reserve an smtp pid, preferring a cached connection to this peer.

        Returns (pid, conn_use) where conn_use is 0 for a new connection.
        """
        pi = self.peer_index[id(peer)]
        ent = self.cache.get(pi)
        if ent is not None:
            pid, last, uses = ent
            if (self.now_us - last < 300_000_000 and self.pid_peer.get(pid) == pi
                    and self.rng.random() < 0.8 and pool.take_specific(pid)):
                self.cache[pi] = (pid, self.now_us, uses + 1)
                return pid, uses + 1
        return pool.take(), 0

    def note_connection(self, peer, pid, conn_use, tls_ok):
        """Remember a fresh TLS connection so later messages may reuse it."""
        pi = self.peer_index[id(peer)]
        if conn_use == 0:
            self.pid_peer[pid] = pi
            if tls_ok and self.rng.random() < 0.5:
                self.cache[pi] = (pid, self.now_us, 1)
            else:
                self.cache.pop(pi, None)

    def rcpts_for(self, peer, n):
        """Recipient addresses at domains served by the given peer."""
        nm = self.names
        if peer.domains is None:
            return [nm.address() for _ in range(n)]
        return [nm.address(self.rng.choice(peer.domains)) for _ in range(n)]

    def episode_relay(self):
        """Inbound SMTP message relayed to a remote MX (the most common case)."""
        rng = self.rng
        lines = []
        cl = self.pick_client()
        in_pid = self.smtpd_pids.take()
        tag = "postfix/smtpd"
        if rng.random() < 0.10:
            tag = "postfix/submission/smtpd"
        qid = self.qid()
        peer = self.pick_peer()
        n = rng.choice((1, 1, 1, 1, 2, 2, 3))
        rcpts = self.rcpts_for(peer, n)
        self.inbound(lines, cl, in_pid, qid, n, tag)
        pid, conn_use = self.take_smtp(peer, self.smtp_pids)
        if conn_use == 0 and rng.random() < 0.025:
            self.connect_timeout(lines, peer, pid, qid, rcpts)
            final = False
        else:
            final = self.outbound(lines, peer, pid, qid, rcpts, "postfix", conn_use)
            self.note_connection(peer, pid, conn_use, peer.tls and not peer.flaky)
        if final:
            lines.append((self.prefix("postfix/qmgr", self.p["qmgr"]), qid + ": removed"))
        return lines, ((self.smtpd_pids, in_pid), (self.smtp_pids, pid))

    def episode_bulk(self):
        """Locally submitted mail sent by a second instance running Postfix >= 3.11."""
        rng = self.rng
        lines = []
        qid = self.qid()
        peer = self.pick_peer()
        n = rng.choice((1, 1, 2))
        rcpts = self.rcpts_for(peer, n)
        lines.append((self.prefix("postfix-out/pickup", self.p["out-pickup"]),
                      "%s: uid=33 from=<%s>" % (qid, "www-data")))
        lines.append((self.prefix("postfix-out/cleanup", self.cleanup_pids[0]),
                      "%s: message-id=%s" % (qid, self.msgid())))
        lines.append((self.prefix("postfix-out/qmgr", self.p["out-qmgr"]),
                      "%s: from=<%s>, size=%d, nrcpt=%d (queue active)"
                      % (qid, "noreply@" + OUR_DOMAIN, rng.choice(self.sizes), n)))
        pid, conn_use = self.take_smtp(peer, self.out_smtp_pids)
        final = self.outbound(lines, peer, pid, qid, rcpts, "postfix-out", conn_use)
        self.note_connection(peer, pid, conn_use, peer.tls and not peer.flaky)
        if final:
            lines.append((self.prefix("postfix-out/qmgr", self.p["out-qmgr"]), qid + ": removed"))
        return lines, ((self.out_smtp_pids, pid),)

    def episode_local(self):
        """Inbound mail for our own users, delivered over LMTP to Dovecot."""
        rng = self.rng
        lines = []
        cl = self.pick_client()
        in_pid = self.smtpd_pids.take()
        qid = self.qid()
        n = rng.choice((1, 1, 1, 2))
        self.inbound(lines, cl, in_pid, qid, n)
        lp = self.lmtp_pids.take()
        sp = self.prefix("postfix/lmtp", lp)
        delays = rng.choice(self.delays_ok)
        for _ in range(n):
            rc = self.names.address(OUR_DOMAIN)
            lines.append((sp, "%s: to=<%s>, relay=mail.%s[private/dovecot-lmtp], %s, dsn=2.0.0, "
                          "status=sent (250 2.0.0 <%s> %s Saved)"
                          % (qid, rc, OUR_DOMAIN, delays, rc, "%x" % rng.getrandbits(88))))
        lines.append((self.prefix("postfix/qmgr", self.p["qmgr"]), qid + ": removed"))
        return lines, ((self.smtpd_pids, in_pid), (self.lmtp_pids, lp))

    def episode_system(self):
        """A cron or system message delivered to a local mailbox."""
        rng = self.rng
        qid = self.qid()
        return [
            (self.prefix("postfix/pickup", self.p["pickup"]), "%s: uid=0 from=<root>" % qid),
            (self.prefix("postfix/cleanup", rng.choice(self.cleanup_pids)),
             "%s: message-id=<%d.%s@%s.%s>" % (qid, rng.getrandbits(32), qid, HOSTNAME, OUR_DOMAIN)),
            (self.prefix("postfix/qmgr", self.p["qmgr"]),
             "%s: from=<root@%s.%s>, size=%d, nrcpt=1 (queue active)" % (qid, HOSTNAME, OUR_DOMAIN, rng.choice(self.sizes))),
            (self.prefix("postfix/local", self.p["local"]),
             "%s: to=<root@%s.%s>, orig_to=<root>, relay=local, %s, dsn=2.0.0, status=sent (delivered to mailbox)"
             % (qid, HOSTNAME, OUR_DOMAIN, rng.choice(self.delays_ok))),
            (self.prefix("postfix/qmgr", self.p["qmgr"]), qid + ": removed"),
        ], ()

    def episode_junk(self):
        """Unwanted inbound connections: rejects, lost connections, failed handshakes."""
        rng = self.rng
        in_pid = self.smtpd_pids.take()
        sp = self.prefix("postfix/smtpd", in_pid)
        nm = self.names
        ip = nm.ipv4()
        na = "unknown[%s]" % ip
        lines = []
        r = rng.random()
        if rng.random() < 0.3:
            lines.append((sp, "warning: hostname %s does not resolve to address %s: Name or service not known"
                          % ("host-%s.%s" % (ip.replace(".", "-"), rng.choice(nm.domains)), ip)))
        lines.append((sp, "connect from " + na))
        if r < 0.45:
            tls = rng.random() < 0.4
            if tls:
                lines.append((sp, "Anonymous TLS connection established from %s: %s" % (na, IN_TLS_TAILS[3][1])))
            lines.append((sp, "NOQUEUE: reject: RCPT from %s: 554 5.7.1 Service unavailable; Client host [%s] "
                          "blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/%s; from=<%s> to=<%s> "
                          "proto=ESMTP helo=<%s>" % (na, ip, ip, nm.address(), nm.address(), rng.choice(nm.domains))))
            st = "ehlo=2 starttls=1 mail=1 rcpt=0/1 quit=1 commands=5/6" if tls else "ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4"
            lines.append((sp, "disconnect from %s %s" % (na, st)))
        elif r < 0.75:
            what = rng.choice(["EHLO", "CONNECT", "AUTH", "RCPT"])
            lines.append((sp, "lost connection after %s from %s" % (what, na)))
            lines.append((sp, "disconnect from %s ehlo=1 commands=1" % na))
        elif r < 0.85:
            err = rng.choice(["-1", "-1", "lost connection", "Connection reset by peer"])
            lines.append((sp, "SSL_accept error from %s: %s" % (na, err)))
            if err == "-1":
                lines.append((sp, "warning: TLS library problem: " + rng.choice(SSL_SERVER_ERRORS)))
            lines.append((sp, "lost connection after STARTTLS from " + na))
            lines.append((sp, "disconnect from %s ehlo=1 starttls=0/1 commands=1/2" % na))
        elif r < 0.95:
            lines.append((sp, "warning: %s: SASL LOGIN authentication failed: UGFzc3dvcmQ6" % na))
            lines.append((sp, "disconnect from %s ehlo=1 auth=0/1 quit=1 commands=2/3" % na))
        else:
            lines.append((sp, "warning: non-SMTP command from %s: GET / HTTP/1.1" % na))
            lines.append((sp, "disconnect from %s unknown=0/1 commands=0/1" % na))
        return lines, ((self.smtpd_pids, in_pid),)

    EPISODES = [(46, "episode_relay"), (14, "episode_bulk"), (18, "episode_local"),
                (3, "episode_system"), (19, "episode_junk")]

    def new_episode(self):
        """Start a random episode; return (lines, pids to release at the end)."""
        return getattr(self, weighted(self.rng, self.EPISODES))()

    def stats_lines(self):
        """The periodic anvil and scache statistics (every 600 s of log time)."""
        rng = self.rng
        at = time.strftime("%b %d %H:%M:%S", time.gmtime(self.now_us // 1_000_000))
        ip = self.names.ipv4()
        ap = self.prefix("postfix/anvil", self.p["anvil"])
        sc = self.prefix("postfix/scache", self.p["scache"])
        hits = rng.randrange(50, 400)
        return [
            (ap, "statistics: max connection rate %d/60s for (smtp:%s) at %s" % (rng.randrange(2, 40), ip, at)),
            (ap, "statistics: max connection count %d for (smtp:%s) at %s" % (rng.randrange(1, 9), ip, at)),
            (ap, "statistics: max cache size %d at %s" % (rng.randrange(20, 300), at)),
            (sc, "statistics: start interval %s" % at),
            (sc, "statistics: domain lookup hits=%d miss=%d success=%d%%" % (hits, hits // 2, 66)),
            (sc, "statistics: address lookup hits=%d miss=%d success=%d%%" % (hits // 8, hits, 11)),
            (sc, "statistics: max simultaneous domains=%d addresses=%d connection=%d"
             % (rng.randrange(2, 9), rng.randrange(3, 14), rng.randrange(3, 20))),
        ]

    # ---------------------------------------------------------------- output

    def run(self, out, limit_bytes):
        """Write framed lines to the binary stream out until limit_bytes is reached."""
        rng = self.rng
        gaps = [max(1, int(rng.expovariate(1.0 / MEAN_GAP_US))) for _ in range(1 << 16)]
        gi = 0
        active = []
        for _ in range(16):
            lines, pids = self.new_episode()
            active.append([lines, 0, pids])
        written = 0
        chunk = []
        chunk_chars = 0
        last_sec = -1
        head = ""
        rfc3339 = self.framing == "3339"
        n_lines = 0
        randrange = rng.randrange
        pending = []
        while written < limit_bytes:
            # Advance the clock; the log's timestamps never go backwards.
            self.now_us += gaps[gi]
            gi = (gi + 1) & 0xFFFF
            sec, usec = divmod(self.now_us, 1_000_000)
            if sec != last_sec:
                last_sec = sec
                t = time.gmtime(sec)
                if rfc3339:
                    head = "%04d-%02d-%02dT%02d:%02d:%02d." % t[:6]
                else:
                    head = "%s %2d %02d:%02d:%02d" % (MONTHS[t[1]], t[2], t[3], t[4], t[5])
                if self.now_us >= self.next_stats_us:
                    self.next_stats_us += 600_000_000
                    pending.extend(self.stats_lines())
            if pending:
                pfx, msg = pending.pop(0)
            else:
                i = randrange(len(active))
                ep = active[i]
                pfx, msg = ep[0][ep[1]]
                ep[1] += 1
                if ep[1] == len(ep[0]):
                    for pool, pid in ep[2]:
                        pool.give(pid)
                    active[i] = active[-1]
                    active.pop()
                    # Keep between 8 and 24 sessions in flight, drifting randomly.
                    k = 1 if len(active) > 20 else rng.choice((1, 1, 2)) if len(active) < 10 else rng.choice((0, 1, 1, 2))
                    for _ in range(k):
                        lines, pids = self.new_episode()
                        active.append([lines, 0, pids])
                    if not active:
                        lines, pids = self.new_episode()
                        active.append([lines, 0, pids])
            if rfc3339:
                line = "%s%06d+00:00%s%s\n" % (head, usec, pfx, msg)
            else:
                line = head + pfx + msg + "\n"
            chunk.append(line)
            chunk_chars += len(line)
            n_lines += 1
            if chunk_chars >= CHUNK_CHARS or written + chunk_chars >= limit_bytes:
                out.write("".join(chunk).encode("ascii"))
                written += chunk_chars
                chunk = []
                chunk_chars = 0
        return n_lines, written


def main():
    args = parse_args()
    limit = int(args.size_mb * 1_000_000)
    gen = Generator(args.seed, args.framing)
    t0 = time.monotonic()
    if args.out == "-":
        n, size = gen.run(sys.stdout.buffer, limit)
    else:
        with open(args.out, "wb") as f:
            n, size = gen.run(f, limit)
    dt = time.monotonic() - t0
    print("wrote %d lines, %d bytes (avg %.0f B/line) in %.1f s" % (n, size, size / max(n, 1), dt),
          file=sys.stderr)


if __name__ == "__main__":
    main()
