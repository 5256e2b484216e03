//! The Dealer: registrations and the path of a CALL.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::options::{CallOptions, CancelMode, InvokePolicy, RegisterOptions};
use super::session::LocalSession;
use super::tables::AckThen;
use super::timers::{Due, TimerKey};
use super::{CallChunk, CallDone, InterruptMsg, InvokeMsg, RealmIdx, Router, ShardMsg, TableChange};
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
    /// When it was created (ms since the Unix epoch, the home shard's clock).
    pub created_ms: u64,
}

impl Registration {
    /// The callee the next call goes to, by the invocation policy.
    pub(super) fn pick(&mut self) -> Option<(usize, Id)> {
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

    /// The callee a rerouted call goes to: the policy's choice among the
    /// callees not in `tried` (those that answered `wamp.error.unavailable`),
    /// as the spec's rerouting rules say (`first`: the next one registered
    /// after, `last`: the one registered before, `roundrobin`: the next in
    /// turn, `random`: another one). `single` is never rerouted.
    fn pick_excluding(&mut self, tried: &[(usize, Id)]) -> Option<(usize, Id)> {
        let mut open = self.callees.iter().enumerate().filter(|(_, c)| !tried.contains(c));
        let i = match self.invoke {
            InvokePolicy::Single => return None,
            InvokePolicy::First => open.next()?.0,
            InvokePolicy::Last => open.next_back()?.0,
            InvokePolicy::Random => {
                let left: Vec<usize> = open.map(|(i, _)| i).collect();
                if left.is_empty() {
                    return None;
                }
                left[rand::Rng::gen_range(&mut rand::thread_rng(), 0..left.len())]
            }
            InvokePolicy::RoundRobin => {
                let n = self.callees.len();
                let i = (0..n).map(|k| (self.next + k) % n).find(|&i| !tried.contains(&self.callees[i]))?;
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
    /// A progressive call invocation whose last chunk has not come yet (the
    /// call is in the callee's `streams` index).
    pub(super) streaming: bool,
    /// The caller announced payload passthru mode.
    pub(super) caller_ppt: bool,
    /// The call as it came, kept while it may be rerouted (a call of a
    /// shared registration with other callees); the payload is a copy, so
    /// that it holds no read buffer.
    pub(super) retry: Option<Box<InvokeMsg>>,
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
    /// A progressive call invocation whose final CALL has not come yet.
    pub(super) streaming: bool,
    /// The caller canceled it in `kill` mode: a reroute must not send it on.
    pub(super) canceled: bool,
    /// When it came, for one call in `metrics::CALL_SAMPLE` (`call_latency`).
    pub(super) started: Option<std::time::Instant>,
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
        if procedure.starts_with("wamp.") || procedure.starts_with("switchyard.router.") {
            return self.error_reply(
                sid,
                MessageType::Register,
                request,
                uris::INVALID_URI,
                "procedures in the wamp. and switchyard.router. namespaces are the router's",
            );
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
        let mut member = false;
        if let Some(id) = r.reg_index.get(policy, &uri) {
            if let Some(reg) = r.registrations.get_mut(id) {
                member = reg.callees.contains(&(me, sid));
                reg.callees.retain(|c| *c != (me, sid));
            }
        }
        self.request_change_from(
            realm,
            (policy, uri),
            sid,
            token,
            InvokePolicy::Single,
            member,
            ShardMsg::UnregisterReq,
        );
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
        let mut change = change;
        let created = existing.is_none();
        if created {
            change.created_ms = super::now_ms();
        }
        let (realm, session, meta) = (change.realm, change.session, !change.uri.starts_with("wamp."));
        self.tell_cluster_callee(&change, change.invoke, true);
        self.broadcast(change, |c| ShardMsg::RegistrationAdd(c, id));
        if meta {
            if created {
                let details = self.realms[realm as usize].registrations.get(&id).map(registration_details);
                if let Some(details) = details {
                    self.meta_event(realm, "wamp.registration.on_create", || {
                        vec![Value::UInt(session), Value::Dict(details)]
                    });
                }
            }
            self.meta_event(realm, "wamp.registration.on_register", || {
                vec![Value::UInt(session), Value::UInt(id)]
            });
        }
    }

    /// On the home shard: remove a callee everywhere; then
    /// `on_unregister` (and `on_delete` when it was the last).
    pub(super) fn home_unregister(&mut self, change: TableChange) {
        let r = &self.realms[change.realm as usize];
        let id = r.reg_index.get(change.policy, &change.uri).copied();
        // only a callee that held the registration unregisters (not one whose
        // REGISTER was refused while it left): its own shard knows for a
        // callee here, this replica for one elsewhere
        let held = if change.shard == self.me {
            change.member
        } else {
            id.and_then(|id| r.registrations.get(&id))
                .is_some_and(|reg| reg.callees.contains(&(change.shard, change.session)))
        };
        let (realm, session, meta) = (change.realm, change.session, held && !change.uri.starts_with("wamp."));
        if held {
            let invoke = id.and_then(|id| r.registrations.get(&id)).map(|reg| reg.invoke);
            if let Some(invoke) = invoke {
                self.tell_cluster_callee(&change, invoke, false);
            }
        }
        self.broadcast(change, ShardMsg::RegistrationRemove);
        if let (Some(id), true) = (id, meta) {
            self.meta_event(realm, "wamp.registration.on_unregister", || {
                vec![Value::UInt(session), Value::UInt(id)]
            });
            if !self.realms[realm as usize].registrations.contains_key(&id) {
                self.meta_event(realm, "wamp.registration.on_delete", || vec![Value::UInt(session), Value::UInt(id)]);
            }
        }
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
                created_ms: change.created_ms,
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
    /// is already pending, or a progressive call the caller did not
    /// announce), for the caller to abort the session with.
    ///
    /// A CALL whose request ID is that of a progressive call invocation in
    /// progress is its next chunk: it goes to the call's callee, whatever
    /// its options say (the first CALL's options hold for the whole call).
    /// One that continues a progressive call completed meanwhile is
    /// discarded, as the spec allows.
    pub(super) fn call(&mut self, sid: Id, request: Id, options: CallOptions, procedure: String, payload: Payload) -> Result<(), String> {
        if let Some(s) = self.sessions.get_mut(&sid) {
            if let Some(call) = s.calls.get_mut(&request) {
                if !call.streaming {
                    return Err(format!("CALL with request ID {request}, which a pending call of this session has"));
                }
                call.streaming = options.progress;
                let (shard, callee) = (call.callee_shard, call.callee);
                let chunk = CallChunk {
                    callee,
                    caller_shard: self.me,
                    caller: sid,
                    call_request: request,
                    progress: options.progress,
                    payload,
                };
                ShardStats::inc(&self.stats.call_chunks);
                if shard == self.me {
                    self.invoke_more(chunk);
                } else {
                    self.send_to(shard, ShardMsg::InvokeMore(Box::new(chunk)));
                }
                return Ok(());
            }
            if s.finished_streams.contains(&request) {
                ShardStats::inc(&self.stats.call_chunks_discarded);
                tracing::debug!(session = sid, request, "CALL chunk for a completed progressive call discarded");
                return Ok(());
            }
            if options.progress && !s.features.progressive_calls {
                return Err("CALL with progress, but the caller did not announce progressive_call_invocations".into());
            }
            if options.ppt.is_some() && !s.features.ppt_caller {
                return Err("CALL in payload passthru mode, but the caller did not announce payload_passthru_mode".into());
            }
        }
        if !self.uri_ok(sid, MessageType::Call, request, &procedure, UriCheck::Concrete, true) {
            return Ok(());
        }
        if let Some(builtin) = super::builtins::Builtin::parse(&procedure) {
            if options.progress {
                self.error_reply(
                    sid,
                    MessageType::Call,
                    request,
                    uris::FEATURE_NOT_SUPPORTED,
                    "the router's own procedures take no progressive call invocations",
                );
                return Ok(());
            }
            self.builtin_call(sid, request, builtin, payload);
            return Ok(());
        }
        let max = self.limits.max_pending_calls;
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
                    let shared = reg.invoke != InvokePolicy::Single && reg.callees.len() > 1;
                    reg.pick().map(|c| (policy, id, c, shared))
                });
                match target {
                    Some((policy, registration, (callee_shard, callee), shared)) => {
                        let timer = options.timeout.map(|after| {
                            self.timers
                                .start(self.clock.now(), after, Due::CallTimeout { caller: sid, request })
                        });
                        let call = OutgoingCall {
                            callee_shard,
                            callee,
                            timer,
                            streaming: options.progress,
                            canceled: false,
                            started: (self.stats.calls.load(Ordering::Relaxed).is_multiple_of(crate::metrics::CALL_SAMPLE))
                                .then(std::time::Instant::now),
                        };
                        s.calls.insert(request, call);
                        let disclose = (options.disclose_me || disclosure == CallerDisclosure::Always)
                            .then(|| (s.identity.authid.clone(), s.identity.authrole.clone()));
                        Ok((
                            s.realm,
                            disclose,
                            s.features.ppt_caller,
                            shared,
                            (policy, registration, (callee_shard, callee)),
                        ))
                    }
                    None => Err(Refused::NoProcedure),
                }
            }
        };
        let (realm, disclose, caller_ppt, shared, (policy, registration, (shard, callee))) = match outcome {
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
            progress: options.progress,
            ppt: options.ppt,
            caller_ppt,
            shared,
            tried: Vec::new(),
            payload,
        };
        if shard == self.me {
            self.invoke_local(inv);
        } else {
            self.send_to(shard, ShardMsg::Invoke(Box::new(inv)));
        }
        Ok(())
    }

    /// On the caller's shard: a callee answered `wamp.error.unavailable`;
    /// the call goes to the next callee by the registration's policy, or
    /// ends with `wamp.error.no_available_callee` when every callee
    /// declined (or left). A call canceled or timed out meanwhile is not
    /// rerouted.
    pub(super) fn reroute(&mut self, mut inv: InvokeMsg) {
        let Some(s) = self.sessions.get_mut(&inv.caller) else { return };
        let Some(call) = s.calls.get_mut(&inv.call_request) else { return };
        if call.canceled {
            // canceled (kill) while the callee declined: nobody else gets it
            let request = inv.call_request;
            if let Some(call) = s.forget_call(request) {
                if let Some(key) = call.timer {
                    self.timers.cancel(key);
                }
            }
            self.stats.pending_calls.fetch_sub(1, Ordering::Relaxed);
            return self.error_reply(inv.caller, MessageType::Call, request, uris::CANCELED, "the call was canceled");
        }
        let next = self.realms[inv.realm as usize]
            .registrations
            .get_mut(&inv.registration)
            .and_then(|reg| reg.pick_excluding(&inv.tried));
        let Some((shard, callee)) = next else {
            let (caller, request) = (inv.caller, inv.call_request);
            if let Some(call) = s.forget_call(request) {
                if let Some(key) = call.timer {
                    self.timers.cancel(key);
                }
            }
            self.stats.pending_calls.fetch_sub(1, Ordering::Relaxed);
            return self.error_reply(
                caller,
                MessageType::Call,
                request,
                uris::NO_AVAILABLE_CALLEE,
                "no callee of the procedure can take the call (each answered wamp.error.unavailable or is at its limits)",
            );
        };
        ShardStats::inc(&self.stats.calls_rerouted);
        call.callee_shard = shard;
        call.callee = callee;
        inv.callee = callee;
        if shard == self.me {
            self.invoke_local(inv);
        } else {
            self.send_to(shard, ShardMsg::Invoke(Box::new(inv)));
        }
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
        // a callee of a shared registration that is gone (or no longer
        // registered): another one may take the call
        let gone = self
            .sessions
            .get(&inv.callee)
            .is_none_or(|s| !s.regs.contains_key(&inv.registration));
        if gone && inv.shared && !inv.progress {
            let mut inv = inv;
            inv.tried.push((self.me, inv.callee));
            return self.send_to(inv.caller_shard, ShardMsg::Reroute(Box::new(inv)));
        }
        let Some(s) = self.sessions.get_mut(&inv.callee) else {
            let done = fail(uris::CANCELED, "the callee left before the call reached it", inv.payload.serializer);
            return self.send_to(inv.caller_shard, ShardMsg::CallDone(Box::new(done)));
        };
        let busy = s.invocations.len() >= self.limits.max_pending_invocations || s.outbox.over_limit();
        if busy && inv.shared && !inv.progress {
            // another callee of the shared registration may take it
            ShardStats::inc(&self.stats.invocations_refused);
            let mut inv = inv;
            inv.tried.push((self.me, inv.callee));
            return self.send_to(inv.caller_shard, ShardMsg::Reroute(Box::new(inv)));
        }
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
        // the spec: a callee takes CALL chunks only if it also announced
        // call canceling
        let unsupported = if inv.progress && !(s.features.progressive_invocations && s.features.cancels) {
            Some("the callee does not support progressive call invocations")
        } else if inv.ppt.is_some() && !s.features.ppt_callee {
            Some("the callee does not support payload passthru mode")
        } else {
            None
        };
        if let Some(why) = unsupported {
            let done = fail(uris::FEATURE_NOT_SUPPORTED, why, s.ser);
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
        let progress = inv.receive_progress && s.features.progressive_results && s.features.cancels;
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
        if inv.progress {
            details.insert("progress", Value::Bool(true));
        }
        if let Some(ppt) = &inv.ppt {
            for (k, v) in &ppt.0 {
                details.insert(k.clone(), v.clone());
            }
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
        let reroutable = inv.shared && !inv.progress;
        if inv.progress {
            s.streams
                .insert((inv.caller_shard, inv.caller, inv.call_request), (request, inv.registration));
        }
        let pending = PendingInvocation {
            caller_shard: inv.caller_shard,
            caller: inv.caller,
            call_request: inv.call_request,
            progress,
            streaming: inv.progress,
            caller_ppt: inv.caller_ppt,
            retry: reroutable.then(|| {
                let mut inv = inv;
                inv.payload.raw = bytes::Bytes::copy_from_slice(&inv.payload.raw);
                Box::new(inv)
            }),
        };
        s.invocations.insert(request, pending);
        self.stats.pending_invocations.fetch_add(1, Ordering::Relaxed);
        s.outbox.push(frame);
        ShardStats::inc(&self.stats.messages_out);
    }

    /// A callee's YIELD (`error` = None, `details` = its payload passthru
    /// attributes) or ERROR for an invocation. A progressive YIELD
    /// (`progress`) keeps the invocation pending, and is dropped if the
    /// INVOCATION did not ask for progress. An ERROR
    /// `wamp.error.unavailable` sends the call on to another callee (see
    /// [`Router::reroute`]); the error's URI is the signal, announced
    /// `call_reroute` or not (no client we test with announces it).
    pub(super) fn callee_answer(&mut self, sid: Id, request: Id, error: Option<String>, progress: bool, details: Dict, payload: Payload) {
        let me = self.me;
        let Some(s) = self.sessions.get_mut(&sid) else { return };
        let progress = progress && error.is_none();
        // a passthru YIELD for a caller that cannot take it: the spec's
        // answer goes to the callee, and the call ends for the caller
        if error.is_none() && !details.is_empty() && s.invocations.get(&request).is_some_and(|inv| !inv.caller_ppt) {
            const WHY: &str = "the caller does not support payload passthru mode";
            let why = codec::payload_from(s.ser, &[Value::Str(WHY.into())]);
            s.outbox.push(encode::error(
                s.ser,
                MessageType::Invocation,
                request,
                &Dict::new(),
                uris::FEATURE_NOT_SUPPORTED,
                &why,
            ));
            ShardStats::inc(&self.stats.messages_out);
            let Some(inv) = s.take_invocation(request) else { return };
            self.stats.pending_invocations.fetch_sub(1, Ordering::Relaxed);
            let done = CallDone {
                progress: false,
                caller: inv.caller,
                call_request: inv.call_request,
                error: Some(uris::FEATURE_NOT_SUPPORTED.to_owned()),
                details: Dict::new(),
                payload: codec::payload_from(Serializer::Json, &[Value::Str(WHY.into())]),
            };
            return self.send_to(inv.caller_shard, ShardMsg::CallDone(Box::new(done)));
        }
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
        let Some(inv) = s.take_invocation(request) else {
            tracing::debug!(session = sid, request, "answer for an unknown invocation ignored");
            return;
        };
        self.stats.pending_invocations.fetch_sub(1, Ordering::Relaxed);
        let mut error = error;
        if error.as_deref() == Some(uris::UNAVAILABLE) {
            if let Some(mut retry) = inv.retry {
                retry.tried.push((me, sid));
                return self.send_to(inv.caller_shard, ShardMsg::Reroute(retry));
            }
            // the spec's answer when no other callee can take the call
            // (`single`, or the last callee of a shared registration)
            error = Some(uris::NO_AVAILABLE_CALLEE.to_owned());
        }
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

    /// On the callee's shard: the next chunk of a progressive call
    /// invocation, as an INVOCATION with the first one's request ID. A chunk
    /// for an invocation that ended meanwhile (answered, canceled, its
    /// callee gone) is dropped; one the callee cannot take (over its
    /// outbound limit or its message size) ends the call: INTERRUPT to the
    /// callee, ERROR to the caller.
    pub(super) fn invoke_more(&mut self, chunk: CallChunk) {
        let key: CallKey = (chunk.caller_shard, chunk.caller, chunk.call_request);
        let Some(s) = self.sessions.get_mut(&chunk.callee) else { return };
        let Some(&(invocation, registration)) = s.streams.get(&key) else {
            tracing::debug!(session = chunk.callee, "chunk for an invocation that ended dropped");
            return;
        };
        if !chunk.progress {
            s.streams.remove(&key);
            if let Some(inv) = s.invocations.get_mut(&invocation) {
                inv.streaming = false;
            }
        }
        let details = if chunk.progress {
            Dict::new().with("progress", Value::Bool(true))
        } else {
            Dict::new()
        };
        let frame = codec::transcode(&chunk.payload, s.ser)
            .ok()
            .map(|p| encode::invocation(s.ser, invocation, registration, &details, &p))
            .filter(|f| !s.outbox.over_limit() && s.outbox.fits(f.len()));
        if s.ser != chunk.payload.serializer && !chunk.payload.is_empty() {
            ShardStats::inc(&self.stats.transcodes);
        }
        if let Some(frame) = frame {
            s.outbox.push(frame);
            ShardStats::inc(&self.stats.messages_out);
            return;
        }
        let options = Dict::new().with("mode", Value::Str(CancelMode::KillNoWait.as_str().into()));
        s.outbox.push(encode::interrupt(s.ser, invocation, &options));
        ShardStats::inc(&self.stats.messages_out);
        if s.take_invocation(invocation).is_none() {
            return;
        }
        self.stats.pending_invocations.fetch_sub(1, Ordering::Relaxed);
        let done = CallDone {
            progress: false,
            caller: chunk.caller,
            call_request: chunk.call_request,
            error: Some(uris::CANCELED.to_owned()),
            details: Dict::new(),
            payload: codec::payload_from(
                Serializer::Json,
                &[Value::Str(
                    "the callee could not take a chunk of the call (not converted, too large, or its outbound queue is full)".into(),
                )],
            ),
        };
        self.send_to(chunk.caller_shard, ShardMsg::CallDone(Box::new(done)));
    }

    /// On the caller's shard: RESULT or ERROR to the caller, if still here.
    pub(super) fn call_done(&mut self, done: CallDone) {
        if done.caller == super::calls::ROUTER_CALLER {
            return self.router_call_done(done);
        }
        let Some(s) = self.sessions.get_mut(&done.caller) else { return };
        if done.progress {
            // a progressive RESULT: the call stays in the table
            if !s.calls.contains_key(&done.call_request) {
                return;
            }
        } else {
            let Some(call) = s.forget_call(done.call_request) else {
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
            if let Some(t) = call.started {
                self.stats.call_latency.record(t.elapsed());
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
                let mut details = Dict::new().with("progress", Value::Bool(true));
                details.0.extend(done.details.0.iter().cloned());
                encode::result(s.ser, done.call_request, &details, &payload)
            }
            None => encode::result(s.ser, done.call_request, &done.details, &payload),
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
        if mode == CancelMode::Kill {
            if let Some(c) = s.calls.get_mut(&request) {
                c.canceled = true;
            }
        } else {
            s.forget_call(request);
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
        let Some(call) = s.forget_call(request) else { return };
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
        let keep = msg.mode == CancelMode::Kill && s.features.cancels;
        if msg.mode != CancelMode::Skip && s.features.cancels {
            s.outbox.push(interrupt(msg.mode));
            ShardStats::inc(&self.stats.messages_out);
        }
        if keep {
            return; // the callee's answer goes to the caller as usual
        }
        s.take_invocation(invocation);
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

impl LocalSession {
    /// Removes a pending invocation of this callee, and its chunk index
    /// entry if it was a progressive call invocation.
    pub(super) fn take_invocation(&mut self, request: Id) -> Option<PendingInvocation> {
        let inv = self.invocations.remove(&request)?;
        if inv.streaming {
            self.streams.remove(&(inv.caller_shard, inv.caller, inv.call_request));
        }
        Some(inv)
    }

    /// Removes a call of this caller from its table. A progressive call
    /// invocation still open is remembered for a while (the last
    /// `limits.max_finished_streams` of them), so that chunks the caller sent before
    /// it learned of the end are discarded, not taken for new calls.
    pub(super) fn forget_call(&mut self, request: Id) -> Option<OutgoingCall> {
        let call = self.calls.remove(&request)?;
        remember_finished(&mut self.finished_streams, self.finished_cap, request, &call);
        Some(call)
    }
}

/// Adds a call that ended while still streaming to `finished` (bounded).
fn remember_finished(finished: &mut std::collections::VecDeque<Id>, cap: usize, request: Id, call: &OutgoingCall) {
    if call.streaming {
        if finished.len() >= cap {
            finished.pop_front();
        }
        finished.push_back(request);
    }
}

/// The default of `limits.max_finished_streams` (the unit test's bound).
#[cfg(test)]
const FINISHED_STREAMS: usize = 64;

/// `RegistrationDetails` of the meta API: id, created (ISO 8601), uri,
/// match, invoke.
pub(super) fn registration_details(reg: &Registration) -> Dict {
    Dict::new()
        .with("id", Value::UInt(reg.id))
        .with("created", Value::Str(super::iso_time(reg.created_ms)))
        .with("uri", Value::Str(reg.uri.to_string()))
        .with("match", Value::Str(reg.policy.as_str().into()))
        .with("invoke", Value::Str(reg.invoke.as_str().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(invoke: InvokePolicy) -> Registration {
        Registration {
            id: 1,
            policy: MatchPolicy::Exact,
            uri: "p".into(),
            invoke,
            callees: vec![(0, 10), (1, 11), (0, 12), (1, 13)],
            next: 0,
            created_ms: 0,
        }
    }

    /// The spec's rerouting rules, callee by callee.
    #[test]
    fn rerouting_follows_the_invocation_policy() {
        let mut first = reg(InvokePolicy::First);
        assert_eq!(first.pick(), Some((0, 10)));
        assert_eq!(first.pick_excluding(&[(0, 10)]), Some((1, 11)), "the one registered after");
        assert_eq!(first.pick_excluding(&[(0, 10), (1, 11)]), Some((0, 12)));
        let mut last = reg(InvokePolicy::Last);
        assert_eq!(last.pick(), Some((1, 13)));
        assert_eq!(last.pick_excluding(&[(1, 13)]), Some((0, 12)), "the one registered before");
        let mut rr = reg(InvokePolicy::RoundRobin);
        assert_eq!(rr.pick(), Some((0, 10)));
        assert_eq!(rr.pick_excluding(&[(0, 10)]), Some((1, 11)), "the next in turn");
        assert_eq!(rr.pick(), Some((0, 12)), "and the turn goes on after it");
        assert_eq!(rr.pick_excluding(&[(0, 12), (1, 13)]), Some((0, 10)), "wrapping around");
        let mut random = reg(InvokePolicy::Random);
        for _ in 0..50 {
            assert_eq!(random.pick_excluding(&[(0, 10), (1, 11), (1, 13)]), Some((0, 12)), "another one");
        }
        let all = [(0, 10), (1, 11), (0, 12), (1, 13)];
        for policy in [
            InvokePolicy::First,
            InvokePolicy::Last,
            InvokePolicy::RoundRobin,
            InvokePolicy::Random,
        ] {
            assert_eq!(reg(policy).pick_excluding(&all), None, "{policy:?}: every callee declined");
        }
        assert_eq!(reg(InvokePolicy::Single).pick_excluding(&[]), None, "single is never rerouted");
    }

    /// A caller remembers the progressive calls that ended while it was
    /// still sending chunks, the last FINISHED_STREAMS of them.
    #[test]
    fn finished_streams_are_bounded() {
        let mut calls = ahash::AHashMap::new();
        let mut finished = std::collections::VecDeque::new();
        let call = |streaming| OutgoingCall {
            callee_shard: 0,
            callee: 1,
            timer: None,
            streaming,
            canceled: false,
            started: None,
        };
        for request in 1..=(FINISHED_STREAMS as u64 + 10) {
            calls.insert(request, call(true));
            let c = calls.remove(&request).expect("inserted");
            remember_finished(&mut finished, FINISHED_STREAMS, request, &c);
        }
        assert_eq!(finished.len(), FINISHED_STREAMS);
        assert_eq!(finished.front(), Some(&11), "the oldest are forgotten");
        remember_finished(&mut finished, FINISHED_STREAMS, 1000, &call(false));
        assert!(!finished.contains(&1000), "a call whose final chunk came is not remembered");
    }
}
