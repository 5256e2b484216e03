//! The Dealer: registrations and the path of a CALL.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::options::{CallOptions, CancelMode, InvokePolicy, RegisterOptions};
use super::tables::AckThen;
use super::timers::{Due, TimerKey};
use super::{CallDone, InterruptMsg, InvokeMsg, RealmIdx, Router, ShardMsg, TableChange};
use crate::codec::{self, encode};
use crate::config::CallerDisclosure;
use crate::metrics::ShardStats;
use crate::wamp::message::Serializer;
use crate::wamp::uri::UriCheck;
use crate::wamp::{uris, Dict, Id, MatchPolicy, MessageType, Payload, Value};

/// One registration (procedure + match policy) in a shard's replica.
#[derive(Debug)]
pub struct Registration {
    pub id: Id,
    pub policy: MatchPolicy,
    pub uri: Arc<str>,
    /// How a call picks one of the callees.
    pub invoke: InvokePolicy,
    /// Every callee, on every shard: (shard, session), in registration
    /// order (the home shard orders the additions, so every replica agrees).
    pub callees: Vec<(usize, Id)>,
    /// This shard's round-robin cursor (each shard cycles on its own).
    next: usize,
}

impl Registration {
    /// The callee the next call goes to, by the invocation policy.
    fn pick(&mut self) -> Option<(usize, Id)> {
        let n = self.callees.len();
        if n == 0 {
            return None;
        }
        let i = match self.invoke {
            InvokePolicy::Single | InvokePolicy::First => 0,
            InvokePolicy::Last => n - 1,
            InvokePolicy::Random => rand::Rng::gen_range(&mut rand::thread_rng(), 0..n),
            InvokePolicy::RoundRobin => {
                let i = self.next % n;
                self.next = (i + 1) % n;
                i
            }
        };
        self.callees.get(i).copied()
    }
}

/// A call this shard delivered to a local callee and awaits the answer of.
#[derive(Debug)]
pub(super) struct PendingInvocation {
    pub(super) caller_shard: usize,
    pub(super) caller: Id,
    pub(super) call_request: Id,
    /// The INVOCATION said `receive_progress`: progressive YIELDs go on to
    /// the caller.
    pub(super) progress: bool,
}

/// A call this shard's session made, on the caller's shard, from CALL until
/// its RESULT or ERROR: where it went, so that what the caller sends later
/// about it (CANCEL, progressive chunks) and its timeout can find it. The
/// call is known router-wide by (caller shard, caller session, CALL request
/// ID), which every message about it carries.
#[derive(Debug, Clone, Copy)]
pub(super) struct OutgoingCall {
    pub(super) callee_shard: usize,
    pub(super) callee: Id,
    /// The call's dealer-side timeout, while it runs.
    pub(super) timer: Option<TimerKey>,
}

/// The router-wide key of a call: (caller's shard, caller, CALL request ID).
pub(super) type CallKey = (usize, Id, Id);

impl Router {
    pub(super) fn register(&mut self, sid: Id, request: Id, options: RegisterOptions, procedure: String) {
        let policy = options.policy;
        if procedure.is_empty() {
            return self.error_reply(sid, MessageType::Register, request, uris::INVALID_URI, "empty procedure URI");
        }
        if !self.uri_ok(sid, MessageType::Register, request, &procedure, UriCheck::Pattern(policy), true) {
            return;
        }
        let Some(invoke) = options.invoke else {
            return self.error_reply(
                sid,
                MessageType::Register,
                request,
                uris::INVALID_ARGUMENT,
                "unknown invocation policy (REGISTER.Options.invoke): single, roundrobin, random, first or last",
            );
        };
        let max = self.limits.max_registrations_per_session;
        let Some(s) = self.sessions.get_mut(&sid) else { return };
        let key: (MatchPolicy, Arc<str>) = (policy, procedure.into());
        if s.regs_pending.contains_key(&key) || s.regs.values().any(|k| *k == key) {
            return self.error_reply(
                sid,
                MessageType::Register,
                request,
                uris::PROCEDURE_ALREADY_EXISTS,
                "this session already registered the procedure",
            );
        }
        if s.regs.len() + s.regs_pending.len() >= max {
            ShardStats::inc(&self.stats.registrations_refused);
            let m = format!("this session holds {max} registrations (limits.max_registrations_per_session)");
            return self.error_reply(sid, MessageType::Register, request, uris::LIMIT_EXCEEDED, &m);
        }
        s.regs_pending.insert(key.clone(), request);
        if options.disclose_caller {
            s.disclose_caller.insert(key.clone());
        }
        let realm = s.realm;
        let token = self.expect_acks(AckThen::Registered {
            session: sid,
            request,
            key: key.clone(),
        });
        self.request_change(realm, (policy, key.1), sid, token, invoke, ShardMsg::RegisterReq);
    }

    pub(super) fn register_done(&mut self, sid: Id, request: Id, key: (MatchPolicy, Arc<str>), id: Id) {
        let Some(s) = self.sessions.get_mut(&sid) else { return };
        if s.regs_pending.remove(&key).is_none() {
            return;
        }
        s.regs.insert(id, key);
        self.session_reply(sid, |ser| encode::registered(ser, request, id));
    }

    pub(super) fn register_refused(&mut self, token: u64, error: &'static str) {
        let Some(p) = self.pending.remove(&token) else { return };
        if let AckThen::Registered { session, request, key } = p.then {
            if let Some(s) = self.sessions.get_mut(&session) {
                s.regs_pending.remove(&key);
                s.disclose_caller.remove(&key);
            }
            self.error_reply(
                session,
                MessageType::Register,
                request,
                error,
                "the procedure is already registered",
            );
        }
    }

    pub(super) fn unregister(&mut self, sid: Id, request: Id, registration: Id) {
        let Some(s) = self.sessions.get_mut(&sid) else { return };
        let Some((policy, uri)) = s.regs.remove(&registration) else {
            return self.error_reply(
                sid,
                MessageType::Unregister,
                request,
                uris::NO_SUCH_REGISTRATION,
                "no such registration",
            );
        };
        s.disclose_caller.remove(&(policy, uri.clone()));
        let realm = s.realm;
        let token = self.expect_acks(AckThen::Unregistered { session: sid, request });
        self.drop_callee(realm, policy, uri, sid, token);
    }

    /// Stops routing calls to `sid` here at once and asks the home shard to
    /// remove it everywhere.
    pub(super) fn drop_callee(&mut self, realm: RealmIdx, policy: MatchPolicy, uri: Arc<str>, sid: Id, token: u64) {
        let me = self.me;
        let r = &mut self.realms[realm as usize];
        if let Some(id) = r.reg_index.get(policy, &uri) {
            if let Some(reg) = r.registrations.get_mut(id) {
                reg.callees.retain(|c| *c != (me, sid));
            }
        }
        self.request_change(realm, (policy, uri), sid, token, InvokePolicy::Single, ShardMsg::UnregisterReq);
    }

    /// On the home shard: refuse a second callee, or assign the ID and tell
    /// every shard.
    pub(super) fn home_register(&mut self, change: TableChange) {
        let r = &self.realms[change.realm as usize];
        let existing = r.reg_index.get(change.policy, &change.uri).copied();
        if let Some(id) = existing {
            // a shared registration takes callees of its own policy only
            let taken = r
                .registrations
                .get(&id)
                .is_some_and(|reg| !reg.callees.is_empty() && (reg.invoke == InvokePolicy::Single || reg.invoke != change.invoke));
            if taken {
                let (origin, token) = (change.origin, change.token);
                return self.send_to(
                    origin,
                    ShardMsg::RegisterRefused {
                        token,
                        error: uris::PROCEDURE_ALREADY_EXISTS,
                    },
                );
            }
        }
        let id = existing.unwrap_or_else(|| self.new_router_id());
        self.broadcast(change, |c| ShardMsg::RegistrationAdd(c, id));
    }

    pub(super) fn apply_registration_add(&mut self, change: TableChange, id: Id) {
        let r = &mut self.realms[change.realm as usize];
        let entry_id = *r.reg_index.get_or_insert_with(change.policy, &change.uri, || id);
        let reg = r.registrations.entry(entry_id).or_insert_with(|| {
            self.stats.registrations.fetch_add(1, Ordering::Relaxed);
            Registration {
                id: entry_id,
                policy: change.policy,
                uri: change.uri.clone(),
                invoke: change.invoke,
                callees: Vec::new(),
                next: 0,
            }
        });
        if reg.callees.is_empty() {
            // a registration whose last callee is on its way out takes the
            // policy of the one that comes now
            reg.invoke = change.invoke;
        }
        let callee = (change.shard, change.session);
        let gone = change.shard == self.me && !self.sessions.contains_key(&change.session);
        if !gone && !reg.callees.contains(&callee) {
            reg.callees.push(callee);
        }
        self.ack(&change, entry_id);
    }

    pub(super) fn apply_registration_remove(&mut self, change: TableChange) {
        let r = &mut self.realms[change.realm as usize];
        let Some(&id) = r.reg_index.get(change.policy, &change.uri) else {
            return self.ack(&change, 0);
        };
        if let Some(reg) = r.registrations.get_mut(&id) {
            reg.callees.retain(|c| *c != (change.shard, change.session));
            if reg.callees.is_empty() {
                r.registrations.remove(&id);
                r.reg_index.remove(change.policy, &change.uri);
                self.stats.registrations.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.ack(&change, id);
    }

    /// A CALL from `sid`. `Err` is a protocol violation (a request ID that
    /// is already pending), for the caller to abort the session with.
    pub(super) fn call(&mut self, sid: Id, request: Id, options: CallOptions, procedure: String, payload: Payload) -> Result<(), String> {
        if !self.uri_ok(sid, MessageType::Call, request, &procedure, UriCheck::Concrete, true) {
            return Ok(());
        }
        let max = self.limits.max_pending_calls;
        // caller identification: refused where the realm forbids it
        /// Why a call is not routed.
        enum Refused {
            Limit,
            NoProcedure,
            Disclosure,
        }
        // one session lookup: the limit, the realm's disclosure, and the
        // call on success
        let outcome = {
            let Some(s) = self.sessions.get_mut(&sid) else { return Ok(()) };
            let r = &mut self.realms[s.realm as usize];
            if s.calls.contains_key(&request) {
                return Err(format!("CALL with request ID {request}, which a pending call of this session has"));
            }
            // caller identification: refused where the realm forbids it
            let disclosure = r.caller_disclosure;
            if s.calls.len() >= max {
                Err(Refused::Limit)
            } else if options.disclose_me && disclosure == CallerDisclosure::Never {
                Err(Refused::Disclosure)
            } else {
                let found = r.reg_index.best_match(&procedure).map(|(policy, id)| (policy, *id));
                let target = found.and_then(|(policy, id)| {
                    let reg = r.registrations.get_mut(&id)?;
                    reg.pick().map(|c| (policy, id, c))
                });
                match target {
                    Some((policy, registration, (callee_shard, callee))) => {
                        let timer = options.timeout.map(|after| {
                            self.timers
                                .start(self.clock.now(), after, Due::CallTimeout { caller: sid, request })
                        });
                        let call = OutgoingCall {
                            callee_shard,
                            callee,
                            timer,
                        };
                        s.calls.insert(request, call);
                        let disclose = (options.disclose_me || disclosure == CallerDisclosure::Always)
                            .then(|| (s.identity.authid.clone(), s.identity.authrole.clone()));
                        Ok((s.realm, disclose, (policy, registration, (callee_shard, callee))))
                    }
                    None => Err(Refused::NoProcedure),
                }
            }
        };
        let (realm, disclose, (policy, registration, (shard, callee))) = match outcome {
            Ok(found) => found,
            Err(Refused::Limit) => {
                ShardStats::inc(&self.stats.calls_refused);
                let m = format!("this session has {max} calls waiting for their results (limits.max_pending_calls)");
                self.error_reply(sid, MessageType::Call, request, uris::LIMIT_EXCEEDED, &m);
                return Ok(());
            }
            Err(Refused::Disclosure) => {
                self.error_reply(
                    sid,
                    MessageType::Call,
                    request,
                    uris::DISCLOSE_ME_NOT_ALLOWED,
                    "this realm does not disclose callers",
                );
                return Ok(());
            }
            Err(Refused::NoProcedure) => {
                self.error_reply(
                    sid,
                    MessageType::Call,
                    request,
                    uris::NO_SUCH_PROCEDURE,
                    "no callee registered the procedure",
                );
                return Ok(());
            }
        };
        ShardStats::inc(&self.stats.calls);
        self.stats.pending_calls.fetch_add(1, Ordering::Relaxed);
        let inv = InvokeMsg {
            realm,
            registration,
            callee,
            caller_shard: self.me,
            caller: sid,
            call_request: request,
            procedure: (policy != MatchPolicy::Exact).then(|| procedure.into()),
            receive_progress: options.receive_progress,
            disclose,
            payload,
        };
        if shard == self.me {
            self.invoke_local(inv);
        } else {
            self.send_to(shard, ShardMsg::Invoke(Box::new(inv)));
        }
        Ok(())
    }

    /// On the callee's shard: send the INVOCATION and remember the caller.
    pub(super) fn invoke_local(&mut self, inv: InvokeMsg) {
        // Test hook, debug builds only: lets the test suite check that a
        // panic while routing a call is contained, on whichever task it is.
        #[cfg(debug_assertions)]
        if std::env::var_os("SWITCHYARD_TEST_PANIC").is_some()
            && self.realms[inv.realm as usize]
                .registrations
                .get(&inv.registration)
                .is_some_and(|r| &*r.uri == "switchyard.test.panic")
        {
            panic!("test hook: a call to switchyard.test.panic");
        }
        let fail = |error: &str, message: &str, ser| CallDone {
            progress: false,
            caller: inv.caller,
            call_request: inv.call_request,
            error: Some(error.to_owned()),
            details: Dict::new(),
            payload: codec::payload_from(ser, &[Value::Str(message.to_owned())]),
        };
        let Some(s) = self.sessions.get_mut(&inv.callee) else {
            let done = fail(uris::CANCELED, "the callee left before the call reached it", inv.payload.serializer);
            return self.send_to(inv.caller_shard, ShardMsg::CallDone(Box::new(done)));
        };
        if s.invocations.len() >= self.limits.max_pending_invocations {
            ShardStats::inc(&self.stats.invocations_refused);
            let done = fail(
                uris::NO_AVAILABLE_CALLEE,
                "the callee has too many calls pending; try again later",
                s.ser,
            );
            return self.send_to(inv.caller_shard, ShardMsg::CallDone(Box::new(done)));
        }
        if s.outbox.over_limit() {
            ShardStats::inc(&self.stats.invocations_refused);
            let done = fail(
                uris::NO_AVAILABLE_CALLEE,
                "the callee is not taking its messages (its outbound queue is over limits.max_outbound_bytes); try again later",
                s.ser,
            );
            return self.send_to(inv.caller_shard, ShardMsg::CallDone(Box::new(done)));
        }
        if !s.regs.contains_key(&inv.registration) {
            let done = fail(uris::NO_SUCH_PROCEDURE, "the callee unregistered the procedure", s.ser);
            return self.send_to(inv.caller_shard, ShardMsg::CallDone(Box::new(done)));
        }
        let payload = match codec::transcode(&inv.payload, s.ser) {
            Ok(p) => p,
            Err(e) => {
                let done = fail(
                    uris::INVALID_ARGUMENT,
                    &format!("payload cannot be converted: {e}"),
                    inv.payload.serializer,
                );
                return self.send_to(inv.caller_shard, ShardMsg::CallDone(Box::new(done)));
            }
        };
        if s.ser != inv.payload.serializer && !inv.payload.is_empty() {
            ShardStats::inc(&self.stats.transcodes);
        }
        let mut details = match &inv.procedure {
            Some(p) => Dict::new().with("procedure", Value::Str(p.to_string())),
            None => Dict::new(),
        };
        // the spec's rule: only a callee that can also be interrupted gets
        // progressive results asked of it
        let progress = inv.receive_progress && s.progressive && s.cancels;
        let callee_asks = !s.disclose_caller.is_empty() && s.regs.get(&inv.registration).is_some_and(|key| s.disclose_caller.contains(key));
        let disclosure = self.realms[inv.realm as usize].caller_disclosure;
        if disclosure != CallerDisclosure::Never && (inv.disclose.is_some() || callee_asks) {
            details.insert("caller", Value::UInt(inv.caller));
            if let Some((authid, authrole)) = &inv.disclose {
                details.insert("caller_authid", Value::Str(authid.to_string()));
                details.insert("caller_authrole", Value::Str(authrole.to_string()));
            }
        }
        if progress {
            details.insert("receive_progress", Value::Bool(true));
        }
        let request = s.invocation_ids.next_id();
        let frame = encode::invocation(s.ser, request, inv.registration, &details, &payload);
        if !s.outbox.fits(frame.len()) {
            let done = fail(
                uris::PAYLOAD_SIZE_EXCEEDED,
                "the invocation is larger than the callee accepts",
                inv.payload.serializer,
            );
            return self.send_to(inv.caller_shard, ShardMsg::CallDone(Box::new(done)));
        }
        s.invocations.insert(
            request,
            PendingInvocation {
                caller_shard: inv.caller_shard,
                caller: inv.caller,
                call_request: inv.call_request,
                progress,
            },
        );
        self.stats.pending_invocations.fetch_add(1, Ordering::Relaxed);
        s.outbox.push(frame);
        ShardStats::inc(&self.stats.messages_out);
    }

    /// A callee's YIELD (`error` = None) or ERROR for an invocation.
    /// A callee's YIELD (`error` = None) or ERROR for an invocation; a
    /// progressive YIELD (`progress`) keeps the invocation pending, and is
    /// dropped if the INVOCATION did not ask for progress.
    pub(super) fn callee_answer(&mut self, sid: Id, request: Id, error: Option<String>, progress: bool, details: Dict, payload: Payload) {
        let Some(s) = self.sessions.get_mut(&sid) else { return };
        let progress = progress && error.is_none();
        if progress {
            let Some(inv) = s.invocations.get(&request) else {
                tracing::debug!(session = sid, request, "progress for an unknown invocation ignored");
                return;
            };
            if !inv.progress {
                tracing::debug!(
                    session = sid,
                    request,
                    "progressive YIELD for a call that did not ask for progress dropped"
                );
                return;
            }
            let done = CallDone {
                progress: true,
                caller: inv.caller,
                call_request: inv.call_request,
                error: None,
                details,
                payload,
            };
            let to = inv.caller_shard;
            return self.send_to(to, ShardMsg::CallDone(Box::new(done)));
        }
        let Some(inv) = s.invocations.remove(&request) else {
            tracing::debug!(session = sid, request, "answer for an unknown invocation ignored");
            return;
        };
        self.stats.pending_invocations.fetch_sub(1, Ordering::Relaxed);
        let done = CallDone {
            progress: false,
            caller: inv.caller,
            call_request: inv.call_request,
            error,
            details,
            payload,
        };
        self.send_to(inv.caller_shard, ShardMsg::CallDone(Box::new(done)));
    }

    /// On the caller's shard: RESULT or ERROR to the caller, if still here.
    pub(super) fn call_done(&mut self, done: CallDone) {
        let Some(s) = self.sessions.get_mut(&done.caller) else { return };
        if done.progress {
            // a progressive RESULT: the call stays in the table
            if !s.calls.contains_key(&done.call_request) {
                return;
            }
        } else {
            let Some(call) = s.calls.remove(&done.call_request) else {
                tracing::debug!(
                    session = done.caller,
                    request = done.call_request,
                    "answer for a call that is not pending dropped"
                );
                return;
            };
            if let Some(key) = call.timer {
                self.timers.cancel(key);
            }
            self.stats.pending_calls.fetch_sub(1, Ordering::Relaxed);
        }
        let payload = match codec::transcode(&done.payload, s.ser) {
            Ok(p) => p,
            // a progressive chunk that cannot be converted is not sent
            Err(_) if done.progress => return,
            Err(_) => codec::payload_from(s.ser, &[Value::Str("the result payload could not be converted".into())]),
        };
        if s.ser != done.payload.serializer && !done.payload.is_empty() {
            ShardStats::inc(&self.stats.transcodes);
        }
        let mut frame = match &done.error {
            None if done.progress => {
                let details = Dict::new().with("progress", Value::Bool(true));
                encode::result(s.ser, done.call_request, &details, &payload)
            }
            None => encode::result(s.ser, done.call_request, &Dict::new(), &payload),
            Some(e) => encode::error(s.ser, MessageType::Call, done.call_request, &done.details, e, &payload),
        };
        if !s.outbox.fits(frame.len()) {
            if done.progress {
                return; // a chunk larger than the caller accepts is left out
            }
            let why = codec::payload_from(s.ser, &[Value::Str("the result is larger than the caller accepts".into())]);
            frame = encode::error(
                s.ser,
                MessageType::Call,
                done.call_request,
                &Dict::new(),
                uris::PAYLOAD_SIZE_EXCEEDED,
                &why,
            );
        }
        s.outbox.push(frame);
        ShardStats::inc(&self.stats.messages_out);
    }

    /// A caller's CANCEL. `skip` and `killnowait` answer the caller with
    /// ERROR `wamp.error.canceled` at once (the callee's answer will be
    /// discarded); `kill` leaves the answer to the callee. The callee's shard
    /// is told in every mode: it drops the pending invocation (skip,
    /// killnowait) and sends INTERRUPT to a callee that announced call
    /// canceling (kill, killnowait). A CANCEL for a call that is not pending
    /// (answered meanwhile, or never made) is ignored.
    pub(super) fn cancel(&mut self, sid: Id, request: Id, mode: CancelMode) {
        let Some(s) = self.sessions.get_mut(&sid) else { return };
        let Some(call) = s.calls.get(&request).copied() else {
            tracing::debug!(session = sid, request, "CANCEL for a call that is not pending ignored");
            return;
        };
        ShardStats::inc(&self.stats.calls_canceled);
        if mode != CancelMode::Kill {
            s.calls.remove(&request);
            if let Some(key) = call.timer {
                self.timers.cancel(key);
            }
            self.stats.pending_calls.fetch_sub(1, Ordering::Relaxed);
            self.error_reply(sid, MessageType::Call, request, uris::CANCELED, "the call was canceled");
        }
        self.interrupt(sid, request, call, mode);
    }

    /// Tells the callee's shard that the call `(me, caller, request)` to
    /// `call` is canceled in `mode`.
    pub(super) fn interrupt(&mut self, caller: Id, request: Id, call: OutgoingCall, mode: CancelMode) {
        let msg = InterruptMsg {
            callee: call.callee,
            caller_shard: self.me,
            caller,
            call_request: request,
            mode,
        };
        self.send_to(call.callee_shard, ShardMsg::Interrupt(msg));
    }

    /// A call's dealer-side timeout: ERROR `wamp.error.timeout` to the caller
    /// and, as the spec orders, `killnowait` to a callee that announced call
    /// canceling (`skip` to one that did not).
    pub(super) fn call_timed_out(&mut self, caller: Id, request: Id) {
        let Some(s) = self.sessions.get_mut(&caller) else { return };
        let Some(call) = s.calls.remove(&request) else { return };
        self.stats.pending_calls.fetch_sub(1, Ordering::Relaxed);
        ShardStats::inc(&self.stats.calls_timed_out);
        self.error_reply(
            caller,
            MessageType::Call,
            request,
            uris::TIMEOUT,
            "the call timed out (CALL.Options.timeout)",
        );
        self.interrupt(caller, request, call, CancelMode::KillNoWait);
    }

    /// On the callee's shard: a call was canceled (see [`Router::cancel`]).
    pub(super) fn interrupt_local(&mut self, msg: InterruptMsg) {
        let key: CallKey = (msg.caller_shard, msg.caller, msg.call_request);
        // the callee left (its leave answered the caller) or answered already
        let Some(s) = self.sessions.get_mut(&msg.callee) else { return };
        // a scan of the callee's pending invocations (at most
        // limits.max_pending_invocations): cancels are rare, and an index
        // would cost every call two more hash operations
        let found = s
            .invocations
            .iter()
            .find(|(_, inv)| (inv.caller_shard, inv.caller, inv.call_request) == key)
            .map(|(id, _)| *id);
        let Some(invocation) = found else {
            return;
        };
        let interrupt = |mode: CancelMode| {
            let options = Dict::new().with("mode", Value::Str(mode.as_str().into()));
            encode::interrupt(s.ser, invocation, &options)
        };
        let keep = msg.mode == CancelMode::Kill && s.cancels;
        if msg.mode != CancelMode::Skip && s.cancels {
            s.outbox.push(interrupt(msg.mode));
            ShardStats::inc(&self.stats.messages_out);
        }
        if keep {
            return; // the callee's answer goes to the caller as usual
        }
        s.invocations.remove(&invocation);
        self.stats.pending_invocations.fetch_sub(1, Ordering::Relaxed);
        if msg.mode == CancelMode::Kill {
            // kill for a callee that cannot be interrupted is skip: the
            // caller, still waiting, is answered now
            let done = CallDone {
                progress: false,
                caller: msg.caller,
                call_request: msg.call_request,
                error: Some(uris::CANCELED.to_owned()),
                details: Dict::new(),
                payload: codec::payload_from(
                    Serializer::Json,
                    &[Value::Str(
                        "the call was canceled (the callee does not support call canceling)".into(),
                    )],
                ),
            };
            self.send_to(msg.caller_shard, ShardMsg::CallDone(Box::new(done)));
        }
    }
}
