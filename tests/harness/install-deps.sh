#!/usr/bin/env bash
# install-deps.sh: installs the Debian packages that the real-MTA test labs need.
#
# Usage: tests/harness/install-deps.sh [PART...]   (postfix, clickhouse, cluster, rspamd, spamassassin, exim, sendmail, opensmtpd, journald, milter, ingest, report)
#
# The one place that installs Debian packages for the tests; clickhouse.sh install and
# rspamd.sh install call it.
#
# "exim" installs only the shared libraries of exim4-daemon-light and creates the Debian-exim
# system user that the binary looks up at start (as exim4-base's postinst does): the Exim package
# itself conflicts with Postfix and is unpacked privately by tests/harness/unpack.sh.
# "opensmtpd" likewise installs the libraries of opensmtpd and creates its opensmtpd and
# opensmtpq users (tests/harness/opensmtpd-lab.sh runs the unpacked smtpd).
#
# "sendmail" installs only the shared libraries of sendmail-bin and m4 (sendmail-lab.sh builds its
# sendmail.cf with m4 from the privately unpacked sendmail-cf); Sendmail itself conflicts with
# Postfix and is unpacked privately by tests/harness/unpack.sh.
#
# MTA defaults to "postfix".
# The script is idempotent and non-interactive: when every package is already
# installed it does not touch apt at all, and it runs `apt-get update` only when
# a package has no install candidate or the first install attempt fails.
# Postfix is installed as the system MTA with "No configuration", and a
# temporary /usr/sbin/policy-rc.d keeps its system service from starting; the
# labs run private instances with `postfix -c CONFDIR` instead.
#
# Exim, Sendmail and OpenSMTPD conflict with Postfix as Debian packages.
# When their labs are added, they will not be installed system-wide: their
# .deb files will be fetched with `apt-get download` and unpacked privately with
# `dpkg -x` under a per-MTA folder, and each lab keeps its files under its own
# subfolder of the lab directory (DIR/ca, DIR/postfix-out, DIR/postfix-in, and
# later DIR/exim-..., DIR/sendmail-..., DIR/opensmtpd-...).
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps.sh: must run as root (it installs Debian packages)" >&2
    exit 1
fi

# The packages every lab needs: openssl makes the private CA, swaks injects
# mail (libnet-ssleay-perl gives it STARTTLS; it is only a Recommends of swaks),
# procps gives pgrep for checking that daemons are gone, xz-utils makes the xz file of
# the compressed-input test (tests/it/cli.rs; gzip is essential).
common_packages=(openssl ca-certificates swaks libnet-ssleay-perl procps xz-utils)

mtas=("$@")
if [[ ${#mtas[@]} -eq 0 ]]; then
    mtas=(postfix)
fi

packages=("${common_packages[@]}")
for mta in "${mtas[@]}"; do
    case "$mta" in
        postfix)
            packages+=(postfix)
            ;;
        clickhouse)
            packages+=(clickhouse-server clickhouse-client curl)
            ;;
        rspamd)
            # --no-install-recommends (below) keeps redis-server out: the tests do not use it.
            packages+=(rspamd curl)
            ;;
        spamassassin)
            # The tests run `spamassassin` with a private site config and -L (no network
            # tests); the spamd service is kept from starting by the policy-rc.d below.
            packages+=(spamassassin)
            ;;
        milter)
            # miltertest (from OpenDKIM's sources) speaks the MTA side of the milter protocol
            # from Lua scripts: the protocol edge-case tests of tests/it/milter.rs.
            packages+=(miltertest)
            ;;
        cluster)
            # The ClickHouse cluster tests (tests/it/cluster.rs, bench/fleet.sh): ZooKeeper for
            # ON CLUSTER DDL and Replicated* tables, run privately by tests/harness/cluster.sh
            # (the Java runtime comes with it; the system service is kept from starting below).
            packages+=(zookeeper)
            ;;
        ingest)
            # The `tlsledger ingest` tests and bench/syslog.sh run a private rsyslogd (own
            # config, pid file and work directory, never the system service: the policy-rc.d
            # below keeps it from starting) and logrotate with a private state file; logger
            # comes from bsdutils (essential).
            packages+=(rsyslog logrotate)
            ;;
        exim)
            # The run-time libraries of exim4-daemon-light (Depends of Debian 12's package)
            # that a base system may lack; the binary comes from unpack.sh.
            packages+=(libdb5.3 libgnutls30 libgnutls-dane0 libidn12 libidn2-0 libnsl2 libpcre2-8-0 libcrypt1)
            ;;
        journald)
            # systemd-journal-remote writes real journal files from export-format input, so
            # the journald source is tested against journalctl reading real journals without
            # a running journald.
            packages+=(systemd-journal-remote)
            ;;
        report)
            # Headless Chromium loads the `tlsledger report --format html` page in the tests.
            packages+=(chromium)
            ;;
        sendmail)
            # The run-time libraries of sendmail-bin (Depends of Debian 12's package) that a
            # base system may lack, and m4 to build a sendmail.cf from sendmail-cf; the binary
            # and the m4 files come from unpack.sh (sendmail-bin conflicts with Postfix).
            packages+=(libwrap0 liblockfile1 libdb5.3 libnsl2 libsasl2-2 libldap-2.5-0 libssl3 m4)
            ;;
        opensmtpd)
            # The run-time libraries of opensmtpd 6.8.0p2 (Depends of Debian 12's package) that a
            # base system may lack; the binary comes from unpack.sh, and the opensmtpd and
            # opensmtpq users are created below as the package's postinst does.
            packages+=(libevent-2.1-7 libdb5.3 libssl3 libpam0g zlib1g libcrypt1 adduser)
            ;;
        *)
            echo "install-deps.sh: unknown part '$mta' (known: postfix, clickhouse, cluster, rspamd, spamassassin, exim, sendmail, opensmtpd, journald, milter, ingest, report)" >&2
            exit 2
            ;;
    esac
done

# A package counts as installed only when dpkg says "install ok installed";
# a package that was removed but not purged reports another status.
missing=()
for package in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$package")
    fi
done

# Debian's exim binary is built with EXIM_USER=Debian-exim and exits at start when that user
# does not exist, before it reads any configuration.
if [[ " ${mtas[*]} " == *" exim "* ]] && ! getent passwd Debian-exim >/dev/null; then
    adduser --system --group --quiet --home /var/spool/exim4 --no-create-home \
        --disabled-login --force-badname Debian-exim
fi

# smtpd drops privileges to these users (as opensmtpd's postinst creates them).
if [[ " ${mtas[*]} " == *" opensmtpd "* ]]; then
    for name in opensmtpd opensmtpq; do
        getent group "$name" >/dev/null || addgroup --system --quiet "$name"
        getent passwd "$name" >/dev/null ||
            adduser --system --quiet --home /var/lib/opensmtpd/empty --no-create-home \
                --disabled-password --ingroup "$name" "$name"
    done
fi

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps.sh: all packages already installed: ${packages[*]}"
    exit 0
fi
echo "install-deps.sh: installing: ${missing[*]}"

export DEBIAN_FRONTEND=noninteractive

# The debconf answer keeps the Postfix package from writing a system main.cf
# and from asking anything.
if [[ " ${missing[*]} " == *" postfix "* ]]; then
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
fi

# A policy-rc.d that answers 101 ("action forbidden") stops invoke-rc.d from
# starting any service that the packages bring. An existing policy-rc.d is
# kept aside and put back afterwards, whatever happens.
policy_rc=/usr/sbin/policy-rc.d
policy_backup=""
if [[ -e "$policy_rc" ]]; then
    policy_backup=$(mktemp /usr/sbin/policy-rc.d.lab-backup.XXXXXX)
    cp -p "$policy_rc" "$policy_backup"
fi
restore_policy_rc() {
    if [[ -n "$policy_backup" ]]; then
        mv -f "$policy_backup" "$policy_rc"
    else
        rm -f "$policy_rc"
    fi
}
trap restore_policy_rc EXIT
printf '#!/bin/sh\n# Written by tests/harness/install-deps.sh; removed when it ends.\nexit 101\n' >"$policy_rc"
chmod 0755 "$policy_rc"

# The package lists are refreshed only when a missing package has no
# install candidate (for example on a fresh image with empty lists).
needs_update=0
for package in "${missing[@]}"; do
    candidate=$(apt-cache policy "$package" 2>/dev/null | awk '/Candidate:/ { print $2 }')
    if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
        needs_update=1
    fi
done
if [[ $needs_update -eq 1 ]]; then
    apt-get update -qq
fi

apt_install() {
    apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}"
}

# Stale package lists make downloads fail with 404; one update and a retry
# covers that case.
if ! apt_install; then
    if [[ $needs_update -eq 1 ]]; then
        exit 1
    fi
    echo "install-deps.sh: install failed, refreshing package lists and retrying" >&2
    apt-get update -qq
    apt_install
fi

# Postfix needs its mail_owner user and setgid group from the package.
if [[ " ${packages[*]} " == *" postfix "* ]]; then
    id postfix >/dev/null
    getent group postdrop >/dev/null
fi
echo "install-deps.sh: done"
