#!/usr/bin/env python3
"""chdb_check.py: runs SQL files on a modern ClickHouse engine, in process, with chdb.

Usage:
    python3 tests/harness/chdb_check.py [options] SQLFILE_OR_DIR...

Every argument is a .sql file or a folder whose *.sql files run in name order
(not recursive). Files run in the order given, all in one chdb session, so a
schema folder given first creates the tables that a dashboards folder given
after it queries. The first failing statement stops the run with exit status 1,
its file, line, text and ClickHouse's error; each file that passes prints one
"OK" line. Usage errors exit 2.

Options:
    --venv DIR          virtualenv to run in (default .ci-work/chdb-venv in the
                        repository). It is created if missing, and chdb is
                        pip-installed into it when missing or when
                        chdb-requirements.txt changed; then this script runs
                        itself again with the venv's python.
    --params K=V        replace the placeholder {K} by V in every statement before
                        running it (repeatable). The values are also passed to
                        chdb as query parameters, so {K:Type} works too (modern
                        servers only; 18.16 knows no query parameters).
    --sample-data FILE --table T
                        insert FILE (JSON lines) with `INSERT INTO T FORMAT
                        JSONEachRow` as soon as table T exists at the end of an
                        argument: after the whole folder (or file) that created
                        it, so that its materialized views are there and the
                        arguments after it see the rows. Repeatable, in pairs. T
                        may carry a column list: --table 'observations (a, b)'.
                        A table that never gets created is an error. T may also
                        be 'T (cols) SELECT ... FROM input(STRUCTURE)' to convert
                        while inserting (run as format(JSONEachRow, STRUCTURE,
                        'data'): chdb drops input() rows silently), e.g. text IPs with IPv6StringToNum() into
                        FixedString(16) (JSON strings are UTF-8 text, so raw
                        bytes >= 0x80 cannot go into FixedString through JSON).
    --db-path DIR       the session's data folder (default: a new temporary folder,
                        removed at the end unless --keep).
    --keep              keep the temporary data folder and print where it is.
    --show              print each statement's result (TSV).
    --install-only      set up the venv and exit.

Splitting: statements end at a ';' outside quotes and comments (normally at a
line end). `--` and `/* */` comments before a statement are dropped; a statement
made only of comments is skipped. A comment line `-- check: skip` or
`-- check: expect-error` right before a statement skips it or requires it to
fail.

Relative paths inside SQL (e.g. the file() table function) resolve against the
folder of the SQL file being run.
"""

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
REQUIREMENTS = HERE / "chdb-requirements.txt"
DEFAULT_VENV = REPO / ".ci-work" / "chdb-venv"
STAMP_NAME = ".chdb_check.stamp"
REEXEC_MARK = "CHDB_CHECK_REEXEC"
START_CWD = Path.cwd()


def eprint(*args):
    print(*args, file=sys.stderr, flush=True)


def die(msg, code=1):
    eprint(f"chdb_check: {msg}")
    sys.exit(code)


# ---------------------------------------------------------------------------
# virtualenv bootstrap (runs with any python3 >= 3.8, standard library only)


def requirements_stamp():
    data = REQUIREMENTS.read_bytes()
    return hashlib.sha256(data + sys.version.encode()).hexdigest()


def venv_python(venv_dir):
    return venv_dir / "bin" / "python"


def in_venv(venv_dir):
    try:
        return Path(sys.prefix).resolve() == venv_dir.resolve()
    except OSError:
        return False


def ensure_venv(venv_dir):
    """Creates venv_dir and installs the pinned chdb into it unless already done."""
    venv_dir.parent.mkdir(parents=True, exist_ok=True)
    stamp_file = venv_dir / STAMP_NAME
    want = requirements_stamp()
    # Concurrent test processes may bootstrap the same venv: one does, the others wait.
    with open(str(venv_dir) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if venv_python(venv_dir).exists() and stamp_file.exists() and stamp_file.read_text().strip() == want:
            return
        t0 = time.monotonic()
        if not venv_python(venv_dir).exists():
            eprint(f"chdb_check: creating virtualenv {venv_dir}")
            venv.EnvBuilder(with_pip=True, clear=True).create(str(venv_dir))
        eprint(f"chdb_check: installing {', '.join(pinned_requirements())} into {venv_dir}")
        cmd = [
            str(venv_python(venv_dir)),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "-r",
            str(REQUIREMENTS),
        ]
        proc = subprocess.run(cmd, check=False)
        if proc.returncode != 0:
            die(f"pip install failed (exit {proc.returncode}): {' '.join(cmd)}")
        check = subprocess.run(
            [str(venv_python(venv_dir)), "-c", "import chdb, chdb.session; print(chdb.__version__)"],
            check=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if check.returncode != 0:
            die(f"chdb does not import in {venv_dir} after install:\n{check.stdout}")
        stamp_file.write_text(want + "\n")
        eprint(f"chdb_check: chdb {check.stdout.strip()} ready in {time.monotonic() - t0:.1f} s")


def pinned_requirements():
    out = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


# ---------------------------------------------------------------------------
# SQL splitting


class Statement:
    def __init__(self, text, line, directives):
        self.text = text
        self.line = line
        self.directives = directives


DIRECTIVE_RE = re.compile(r"^\s*--\s*check:\s*([a-z-]+)\s*$")


def split_sql(sql):
    """Splits sql into statements at ';' outside quotes and comments.

    Leading comments of each statement are dropped (directives from them are
    kept); comments inside a statement stay (ClickHouse ignores them).
    """
    statements = []
    buf = []  # characters of the current statement, leading comments excluded
    directives = []
    start_line = None
    line = 1
    i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c == "\n":
            line += 1
        if c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            comment = sql[i:end]
            if not "".join(buf).strip():
                m = DIRECTIVE_RE.match(comment)
                if m:
                    directives.append(m.group(1))
            else:
                buf.append(comment)
            i = end
            continue
        if c == "/" and sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end < 0 else end + 2
            comment = sql[i:end]
            line += comment.count("\n")
            if "".join(buf).strip():
                buf.append(comment)
            i = end
            continue
        if c in "'\"`":
            j = i + 1
            while j < n:
                if sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # doubled quote
                        j += 2
                        continue
                    break
                j += 1
            literal = sql[i : j + 1]
            if start_line is None:
                start_line = line
            line += literal.count("\n")
            buf.append(literal)
            i = j + 1
            continue
        if c == ";":
            text = "".join(buf).strip()
            if text:
                statements.append(Statement(text, start_line, directives))
            buf, directives, start_line = [], [], None
            i += 1
            continue
        if start_line is None and not c.isspace():
            start_line = line
        buf.append(c)
        i += 1
    text = "".join(buf).strip()
    if text:
        statements.append(Statement(text, start_line, directives))
    return statements


# ---------------------------------------------------------------------------
# running (inside the venv)

PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def substitute(text, params):
    return PLACEHOLDER_RE.sub(lambda m: params.get(m.group(1), m.group(0)), text)


def collect_files(paths):
    """Returns one list of .sql files per argument."""
    groups = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.suffix == ".sql" and f.is_file())
            if not found:
                eprint(f"chdb_check: note: no .sql files in {p}")
            groups.append([f.resolve() for f in found])
        elif path.is_file():
            groups.append([path.resolve()])
        else:
            die(f"no such file or folder: {p}", 2)
    return groups


def display(path):
    try:
        return str(path.relative_to(START_CWD))
    except ValueError:
        return str(path)


def shorten(text, limit=2000):
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters)"


def table_name(spec):
    """'db.t (a, b)' or 'db.t SELECT ... FROM input(...)' -> 'db.t' (for EXISTS TABLE)."""
    return re.split(r"[\s(]", spec.strip(), 1)[0]


INPUT_RE = re.compile(r"\binput\s*\(", re.IGNORECASE)


def sample_insert_sql(spec, data):
    """The INSERT for --sample-data FILE --table SPEC.

    chdb silently inserts nothing for `INSERT ... SELECT ... FROM input(S) FORMAT
    JSONEachRow <data>`, so input(S) is rewritten to format(JSONEachRow, S, '<data>').
    """
    m = INPUT_RE.search(spec)
    if not m:
        return f"INSERT INTO {spec} FORMAT JSONEachRow\n{data}"
    # Find the parenthesis closing input(, skipping quoted strings.
    i, depth, quote = m.end(), 1, None
    while i < len(spec) and depth:
        c = spec[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"`":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        i += 1
    if depth:
        die(f"unbalanced parentheses in --table {spec!r}", 2)
    structure = spec[m.end() : i - 1].strip()
    literal = "'" + data.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return f"INSERT INTO {spec[: m.start()]}format(JSONEachRow, {structure}, {literal}){spec[i:]}"


def result_rows_written(res):
    try:
        value = res.rows_written
        return int(value() if callable(value) else value)
    except Exception:
        return None


def run(args):
    import chdb
    from chdb import session as chdb_session

    params = {}
    for kv in args.params or []:
        if "=" not in kv:
            die(f"--params wants K=V, got {kv!r}", 2)
        k, v = kv.split("=", 1)
        params[k] = v

    samples = list(zip(args.table or [], [Path(f).resolve() for f in args.sample_data or []]))
    if len(args.table or []) != len(args.sample_data or []):
        die("--sample-data and --table go in pairs", 2)
    for _, f in samples:
        if not f.is_file():
            die(f"sample data file not found: {f}", 2)

    groups = collect_files(args.paths)
    files = [f for g in groups for f in g]
    if not files:
        die("no .sql files to run", 2)

    tmp_created = args.db_path is None
    db_path = Path(args.db_path).resolve() if args.db_path else Path(tempfile.mkdtemp(prefix="chdb_check_"))
    db_path.mkdir(parents=True, exist_ok=True)

    t0 = time.monotonic()
    sess = chdb_session.Session(str(db_path))
    engine = str(sess.query("SELECT version()", "TSV")).strip()
    cwd = os.getcwd()
    pending = list(samples)
    total = 0
    try:

        def query(sql, fmt="TSV"):
            if params:
                return sess.query(sql, fmt, params=params)
            return sess.query(sql, fmt)

        def insert_ready_samples():
            for spec, data_file in list(pending):
                exists = str(sess.query(f"EXISTS TABLE {table_name(spec)}", "TSV")).strip()
                if exists != "1":
                    continue
                t = time.monotonic()
                data = data_file.read_text()
                rows = sum(1 for ln in data.splitlines() if ln.strip())
                sql = sample_insert_sql(spec, data)
                try:
                    res = sess.query(sql, "TSV")
                except Exception as e:  # chdb raises ChdbError (a RuntimeError)
                    print(f"FAIL {display(data_file)}: {shorten(sql, 500)}\n  error: {str(e).strip()}")
                    return False
                written = result_rows_written(res)
                if written is not None and written < rows:
                    print(
                        f"FAIL {display(data_file)}: {rows} rows in the file, but the INSERT into {spec} "
                        f"wrote {written}"
                    )
                    return False
                short = spec if len(spec) <= 60 else spec[:57] + "..."
                print(
                    f"OK   {display(data_file)} ({rows} rows into {short}, {(time.monotonic() - t) * 1000:.0f} ms)",
                    flush=True,
                )
                pending.remove((spec, data_file))
            return True

        for f in (f for g in groups for f in g + [None]):
            if f is None:  # end of an argument (file or folder)
                if not insert_ready_samples():
                    return 1
                continue
            t = time.monotonic()
            try:
                statements = split_sql(f.read_text())
            except UnicodeDecodeError as e:
                print(f"FAIL {display(f)}: not UTF-8: {e}")
                return 1
            os.chdir(f.parent)
            ran = skipped = 0
            for st in statements:
                if "skip" in st.directives:
                    skipped += 1
                    continue
                sql = substitute(st.text, params)
                expect_error = "expect-error" in st.directives
                try:
                    res = query(sql)
                except Exception as e:
                    if expect_error:
                        ran += 1
                        continue
                    print(f"FAIL {display(f)}:{st.line}:\n{shorten(sql)}\n  error: {str(e).strip()}")
                    left = sorted(set(PLACEHOLDER_RE.findall(sql)))
                    if left:
                        print(
                            f"  note: unreplaced placeholders {', '.join('{' + x + '}' for x in left)}; "
                            f"pass --params K=V"
                        )
                    return 1
                if expect_error:
                    print(f"FAIL {display(f)}:{st.line}: expected an error, the statement succeeded:\n{shorten(sql)}")
                    return 1
                ran += 1
                if args.show:
                    out = str(res)
                    print(f"-- {display(f)}:{st.line}\n{out}", end="" if out.endswith("\n") else "\n")
            os.chdir(cwd)
            total += ran
            extra = f", {skipped} skipped" if skipped else ""
            print(f"OK   {display(f)} ({ran} statements{extra}, {(time.monotonic() - t) * 1000:.0f} ms)", flush=True)
        if pending:
            names = ", ".join(spec for spec, _ in pending)
            print(f"FAIL sample data not inserted: table(s) never created: {names}")
            return 1
        print(
            f"chdb_check: {len(files)} files, {total} statements OK in {time.monotonic() - t0:.2f} s "
            f"(chdb {chdb.__version__}, ClickHouse {engine})",
            flush=True,
        )
        return 0
    finally:
        os.chdir(cwd)
        try:
            sess.close()
        except Exception:
            pass
        if tmp_created and not args.keep:
            shutil.rmtree(db_path, ignore_errors=True)
        elif tmp_created:
            eprint(f"chdb_check: session data kept in {db_path}")


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="chdb_check.py",
        description="Run .sql files on ClickHouse 26 in process (chdb); exit 1 on the first error.",
    )
    p.add_argument("paths", nargs="*", metavar="SQLFILE_OR_DIR")
    p.add_argument("--venv", default=None, help=f"virtualenv (default {DEFAULT_VENV})")
    p.add_argument("--params", "--param", action="append", metavar="K=V", help="replace {K} by V (repeatable)")
    p.add_argument("--sample-data", action="append", metavar="FILE.jsonl", help="JSON lines to insert (with --table)")
    p.add_argument("--table", action="append", metavar="T", help="table for the --sample-data before it")
    p.add_argument("--db-path", default=None, help="session data folder (default: temporary)")
    p.add_argument("--keep", action="store_true", help="keep the temporary session data folder")
    p.add_argument("--show", action="store_true", help="print every statement's result")
    p.add_argument("--install-only", action="store_true", help="only create the venv and install chdb")
    args = p.parse_args(argv)
    if not args.paths and not args.install_only:
        p.error("give at least one .sql file or folder")
    return args


def main():
    args = parse_args(sys.argv[1:])
    venv_dir = Path(args.venv).resolve() if args.venv else DEFAULT_VENV
    if not in_venv(venv_dir):
        if os.environ.get(REEXEC_MARK):
            die(f"re-executed with {venv_python(venv_dir)} but sys.prefix is {sys.prefix}")
        ensure_venv(venv_dir)
        if args.install_only:
            return 0
        env = dict(os.environ, **{REEXEC_MARK: "1"})
        py = str(venv_python(venv_dir))
        os.execve(py, [py, str(Path(__file__).resolve())] + sys.argv[1:], env)
    if args.install_only:
        return 0
    try:
        import chdb  # noqa: F401
    except ImportError as e:
        die(f"chdb does not import in {sys.prefix} ({e}); delete the venv and run again")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
