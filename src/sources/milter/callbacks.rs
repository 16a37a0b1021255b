//! The indymilter callbacks: thin glue between the MTA's commands and [`Session`].
//!
//! Each callback copies what it is handed (host name, socket address, macros, header names) into
//! the session of its connection and answers through `answer`, the one place that decides the
//! reply: `continue` (or no reply where "no reply" was negotiated), whatever happened, so an
//! internal error never holds or rejects mail. Errors are logged with the session's queue ids.

use std::ffi::{CStr, CString};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use chrono::Utc;
use indymilter::{Actions, Callbacks, ContextActions, MacroStage, Macros, ProtoOpts, SocketInfo, Status};

use super::session::{Session, CONNECT_MACROS, EOM_MACROS, HELO_MACROS, MAIL_MACROS};
use super::{Counters, Outlet, Settings};
use crate::feeds::spamassassin::{header_value, HEADER};
use crate::reputation::classify::{Class, Classification};

/// What one MTA connection negotiated, and its current SMTP session.
#[derive(Debug, Default)]
pub struct Connection {
    /// The "no reply" flags the MTA accepted.
    noreply: ProtoOpts,
    /// The MTA lets us add headers.
    add_header: bool,
    /// The MTA lets us delete headers.
    change_header: bool,
    /// The SMTP session, from connect to close (a connection may carry several in turn).
    session: Option<Session>,
}

/// The stages whose reply may be "no reply".
#[derive(Debug, Clone, Copy)]
enum Stage {
    Connect,
    Helo,
    Mail,
    Header,
    Eom,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::Mail => "mail",
            Stage::Header => "header",
            Stage::Eom => "end of message",
        }
    }

    fn noreply_flag(self) -> ProtoOpts {
        match self {
            Stage::Connect => ProtoOpts::NOREPLY_CONNECT,
            Stage::Helo => ProtoOpts::NOREPLY_HELO,
            Stage::Mail => ProtoOpts::NOREPLY_MAIL,
            Stage::Header => ProtoOpts::NOREPLY_HEADER,
            Stage::Eom => ProtoOpts::empty(),
        }
    }
}

/// The reply to every callback: the milter only observes, so it is `continue` (or no reply when
/// negotiated) on success and on every error alike. Errors are logged and counted here.
fn answer(stage: Stage, connection: Option<&Connection>, result: Result<()>, counters: &Counters) -> Status {
    if let Err(error) = result {
        counters.errors.fetch_add(1, Ordering::Relaxed);
        let queue_ids = connection
            .and_then(|c| c.session.as_ref())
            .map(|s| s.queue_ids().join(","))
            .filter(|ids| !ids.is_empty())
            .unwrap_or_else(|| "-".to_owned());
        eprintln!("tlsledger: milter: {queue_ids}: {}: {error:#}; answering continue", stage.name());
    }
    let noreply =
        connection.is_some_and(|c| !stage.noreply_flag().is_empty() && c.noreply.contains(stage.noreply_flag()));
    if noreply {
        Status::Noreply
    } else {
        Status::Continue
    }
}

/// A macro lookup over indymilter's macros (values read lossily as UTF-8).
fn lookup(macros: &Macros) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| {
        let name = CString::new(name).ok()?;
        macros.get(&name).map(|v: &CStr| v.to_string_lossy().into_owned())
    }
}

/// The classification used when the state cannot tell (no IP, no answer in time).
fn unknown_classification() -> Classification {
    Classification {
        class: Class::Unknown,
        baseline: Class::Unknown,
        broken_starttls: None,
        downgrade: None,
        dormant: false,
        expired: false,
        allowed: false,
        never_enforce: false,
        evidence: Vec::new(),
    }
}

fn session_of(connection: Option<&mut Connection>) -> Result<&mut Session> {
    connection.and_then(|c| c.session.as_mut()).ok_or_else(|| anyhow!("command outside an SMTP session"))
}

/// The callbacks of the milter.
pub fn callbacks(settings: Arc<Settings>, outlet: Outlet) -> Callbacks<Connection> {
    let header = settings.header;
    let counters = Arc::clone(outlet.counters());
    let (c1, c2, c3, c4, c5) =
        (Arc::clone(&counters), Arc::clone(&counters), Arc::clone(&counters), Arc::clone(&counters), counters);
    let (s1, s2) = (Arc::clone(&settings), settings);
    let outlet_eom = outlet.clone();
    Callbacks::new()
        .on_negotiate(move |cx, mta_actions, mta_opts| {
            Box::pin(async move {
                let mut wanted = Actions::empty();
                if header {
                    wanted |= Actions::ADD_HEADER | Actions::CHANGE_HEADER;
                }
                let actions = wanted & mta_actions;
                let may_request_macros = mta_actions.contains(Actions::REQUEST_MACROS);
                cx.requested_actions = actions | (mta_actions & Actions::REQUEST_MACROS);
                let mut skip = ProtoOpts::NO_RCPT | ProtoOpts::NO_DATA | ProtoOpts::NO_EOH | ProtoOpts::NO_BODY;
                skip |= ProtoOpts::NO_UNKNOWN;
                if !header {
                    skip |= ProtoOpts::NO_HEADER;
                }
                let noreply = (ProtoOpts::NOREPLY_CONNECT
                    | ProtoOpts::NOREPLY_HELO
                    | ProtoOpts::NOREPLY_MAIL
                    | ProtoOpts::NOREPLY_HEADER)
                    & mta_opts;
                cx.requested_opts = (skip & mta_opts) | noreply;
                if may_request_macros {
                    for (stage, list) in [
                        (MacroStage::Connect, CONNECT_MACROS),
                        (MacroStage::Helo, HELO_MACROS),
                        (MacroStage::Mail, MAIL_MACROS),
                        (MacroStage::Eom, EOM_MACROS),
                    ] {
                        // The lists are constants without NUL bytes.
                        if let Ok(list) = CString::new(list) {
                            cx.requested_macros.insert(stage, list);
                        }
                    }
                }
                cx.data = Some(Connection {
                    noreply,
                    add_header: actions.contains(Actions::ADD_HEADER),
                    change_header: actions.contains(Actions::CHANGE_HEADER),
                    session: None,
                });
                Status::Continue
            })
        })
        .on_connect(move |cx, hostname, socket| {
            let counters = Arc::clone(&c1);
            Box::pin(async move {
                let address = match socket {
                    SocketInfo::Inet(address) => Some(address),
                    SocketInfo::Unix(_) | SocketInfo::Unknown => None,
                };
                let session = Session::connect(Utc::now(), &hostname.to_string_lossy(), address, &lookup(&cx.macros));
                let connection = cx.data.get_or_insert_with(Connection::default);
                connection.session = Some(session);
                answer(Stage::Connect, cx.data.as_ref(), Ok(()), &counters)
            })
        })
        .on_helo(move |cx, _helo| {
            let counters = Arc::clone(&c2);
            Box::pin(async move {
                let result = session_of(cx.data.as_mut()).map(|s| s.stage_macros(&lookup(&cx.macros)));
                answer(Stage::Helo, cx.data.as_ref(), result, &counters)
            })
        })
        .on_mail(move |cx, _args| {
            let counters = Arc::clone(&c3);
            Box::pin(async move {
                let result = session_of(cx.data.as_mut()).map(|s| s.mail(&lookup(&cx.macros)));
                answer(Stage::Mail, cx.data.as_ref(), result, &counters)
            })
        })
        .on_header(move |cx, name, _value| {
            let counters = Arc::clone(&c4);
            Box::pin(async move {
                let result = session_of(cx.data.as_mut()).map(|s| s.header(&name.to_string_lossy()));
                answer(Stage::Header, cx.data.as_ref(), result, &counters)
            })
        })
        .on_eom(move |cx| {
            let settings = Arc::clone(&s1);
            let outlet = outlet_eom.clone();
            Box::pin(async move {
                let result = end_of_message(cx, &settings, &outlet).await;
                answer(Stage::Eom, cx.data.as_ref(), result, outlet.counters())
            })
        })
        .on_abort(|cx| {
            Box::pin(async move {
                if let Some(session) = cx.data.as_mut().and_then(|c| c.session.as_mut()) {
                    session.abort();
                }
                Status::Continue
            })
        })
        .on_close(move |cx| {
            let settings = Arc::clone(&s2);
            let outlet = outlet.clone();
            let counters = Arc::clone(&c5);
            Box::pin(async move {
                // indymilter calls close on QUIT, on a lost connection and at shutdown; the
                // session is taken, so it is recorded once.
                if let Some(session) = cx.data.as_mut().and_then(|c| c.session.take()) {
                    outlet.record(session.observation(&settings.source, Utc::now()));
                    counters.sessions.fetch_add(1, Ordering::Relaxed);
                }
                Status::Continue
            })
        })
}

/// End of message: deletes the client's copies of the header, then adds ours.
async fn end_of_message(
    cx: &mut indymilter::EomContext<Connection>,
    settings: &Settings,
    outlet: &Outlet,
) -> Result<()> {
    let macros = lookup(&cx.macros);
    let connection = cx.data.as_mut().ok_or_else(|| anyhow!("end of message outside an SMTP session"))?;
    let session = connection.session.as_mut().ok_or_else(|| anyhow!("end of message outside an SMTP session"))?;
    let plan = session.eom(&macros);
    if !settings.header || !connection.add_header {
        return Ok(());
    }
    let classification = match session.peer_ip() {
        Some(_) => outlet.classify(session.observation(&settings.source, Utc::now()), settings.classify_deadline).await,
        None => None,
    };
    let value = header_value(&classification.unwrap_or_else(unknown_classification), session.header_tls());
    if plan.forged_copies > 0 {
        if !connection.change_header {
            return Err(anyhow!(
                "{} forged {HEADER} header(s) kept: the MTA does not let milters delete headers",
                plan.forged_copies
            ));
        }
        for index in (1..=plan.forged_copies).rev() {
            let index = i32::try_from(index).unwrap_or(i32::MAX);
            cx.actions
                .change_header(HEADER, index, None::<CString>)
                .await
                .map_err(|e| anyhow!("cannot delete a forged {HEADER}: {e}"))?;
        }
    }
    cx.actions.add_header(HEADER, value).await.map_err(|e| anyhow!("cannot add {HEADER}: {e}"))?;
    Ok(())
}
