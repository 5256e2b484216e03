//! The router as a caller: calls to procedures that components registered,
//! for dynamic authentication and authorization. They travel like any CALL
//! (an `InvokeMsg` to the callee's shard, a `CallDone` back), from the
//! reserved caller session [`ROUTER_CALLER`] (0, which no session ID is),
//! and end in a timer if nobody answers. The callee sees an ordinary
//! INVOCATION; rerouting, progress and cancellation do not apply.

use std::time::Duration;

use ahash::AHashMap;

use super::messages::{CallDone, InvokeMsg};
use super::timers::{Due, TimerKey};
use super::{RealmIdx, Router, ShardMsg};
use crate::codec;
use crate::wamp::message::Serializer;
use crate::wamp::{Id, MatchPolicy, Value};

/// The caller session of the router's own calls.
pub(super) const ROUTER_CALLER: Id = 0;

/// What a router call's answer is for.
#[derive(Debug)]
pub(super) enum Purpose {
    /// The authenticator, for the login on this connection.
    Authenticate { conn: super::ConnId },
    /// The authorizer, for the first message session `sid` has parked.
    Authorize { sid: Id, key: super::auth::AuthzKey },
}

#[derive(Debug)]
pub(super) struct RouterCall {
    purpose: Purpose,
    timer: TimerKey,
}

/// The router's calls of this shard still waiting for their answer.
#[derive(Debug, Default)]
pub(super) struct RouterCalls {
    pending: AHashMap<Id, RouterCall>,
    next: Id,
}

impl RouterCalls {
    /// How many wait.
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }
}

impl Router {
    /// Calls `procedure` on realm `realm` with `args`; the answer (or its
    /// failure) goes to `purpose`. An error at once when nobody registered
    /// the procedure.
    pub(super) fn router_call(
        &mut self,
        realm: RealmIdx,
        procedure: &str,
        args: &[Value],
        timeout: Duration,
        purpose: Purpose,
    ) -> Result<(), String> {
        let r = &mut self.realms[realm as usize];
        // only an exact registration with one callee: a pattern or a shared
        // registration would let another session take the router's calls
        let found = r
            .reg_index
            .best_match(procedure)
            .map(|(policy, id)| (policy, *id))
            .filter(|(policy, _)| *policy == MatchPolicy::Exact);
        let target = found.and_then(|(policy, id)| {
            let reg = r.registrations.get_mut(&id)?;
            if reg.callees.len() != 1 {
                return None;
            }
            reg.pick().map(|c| (policy, id, c))
        });
        let Some((policy, registration, (shard, callee))) = target else {
            return Err(format!(
                "nobody registered '{procedure}' on realm '{}' (exactly, and alone)",
                r.name
            ));
        };
        self.router_calls.next += 1;
        let request = self.router_calls.next;
        let timer = self.timers.start(self.clock.now(), timeout, Due::RouterCall { request });
        self.router_calls.pending.insert(request, RouterCall { purpose, timer });
        let inv = InvokeMsg {
            realm,
            registration,
            callee,
            caller_shard: self.me,
            caller: ROUTER_CALLER,
            call_request: request,
            procedure: (policy != MatchPolicy::Exact).then(|| procedure.into()),
            receive_progress: false,
            disclose: None,
            progress: false,
            ppt: None,
            caller_ppt: false,
            shared: false,
            tried: Vec::new(),
            payload: codec::payload_from(Serializer::Json, args),
        };
        if shard == self.me {
            self.invoke_local(inv);
        } else {
            self.send_to(shard, ShardMsg::Invoke(Box::new(inv)));
        }
        Ok(())
    }

    /// The answer to one of the router's calls.
    pub(super) fn router_call_done(&mut self, done: CallDone) {
        if done.progress {
            return; // only the final result counts
        }
        let Some(call) = self.router_calls.pending.remove(&done.call_request) else {
            return;
        };
        self.timers.cancel(call.timer);
        let answer = match done.error {
            Some(e) => Err(e),
            None => match codec::payload_values(&done.payload) {
                Ok(values) => match values.into_iter().next() {
                    Some(Value::List(args)) => Ok(args.into_iter().next().unwrap_or(Value::Null)),
                    _ => Ok(Value::Null),
                },
                Err(e) => Err(format!("an unreadable result: {e}")),
            },
        };
        self.router_call_answered(call.purpose, answer);
    }

    /// One of the router's calls had no answer in time.
    pub(super) fn router_call_timed_out(&mut self, request: Id) {
        if let Some(call) = self.router_calls.pending.remove(&request) {
            self.router_call_answered(call.purpose, Err(crate::wamp::uris::TIMEOUT.into()));
        }
    }

    fn router_call_answered(&mut self, purpose: Purpose, answer: Result<Value, String>) {
        match purpose {
            Purpose::Authenticate { conn } => self.authenticator_answered(conn, answer),
            Purpose::Authorize { sid, key } => self.authorizer_answered(sid, key, answer),
        }
    }
}
