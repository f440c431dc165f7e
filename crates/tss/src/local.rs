//! Runs every party of a ceremony in one process, routing each message through its wire
//! encoding. Tests and benchmarks use it; so can a device that plays several parties.
//!
//! Delivery is FIFO or shuffled (seeded), and an optional filter sees every encoded message
//! on its way, so tests can tamper with, drop, duplicate or replay messages as a hostile
//! relay would.

use std::collections::{BTreeMap, VecDeque};

use crate::error::TssError;
use crate::machine::{Ceremony, Step};
use crate::message::Message;
use crate::party::PartyId;

/// How queued messages are delivered.
#[derive(Clone, Copy, Debug)]
pub enum Order {
    Fifo,
    /// Pseudo-random order from this seed (reproducible).
    Shuffled(u64),
}

/// The outcome for each party, in the order the parties were given, and the traffic.
#[derive(Debug)]
pub struct LocalRun<T> {
    pub outputs: Vec<Result<T, TssError>>,
    pub messages: usize,
    pub bytes: usize,
}

/// A hostile relay: sees (recipient, encoded message) and returns what is delivered instead
/// (empty to drop, several to duplicate).
pub type Filter<'a> = dyn FnMut(&PartyId, Vec<u8>) -> Vec<Vec<u8>> + 'a;

/// Runs to completion with FIFO delivery and no tampering; the first error is returned.
pub fn run<C: Ceremony>(parties: Vec<C>) -> Result<(Vec<C::Output>, usize), TssError> {
    let r = run_with(parties, Order::Fifo, &mut |_, m| vec![m]);
    let bytes = r.bytes;
    let outs = r.outputs.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok((outs, bytes))
}

pub fn run_with<C: Ceremony>(
    mut parties: Vec<C>,
    order: Order,
    filter: &mut Filter<'_>,
) -> LocalRun<C::Output> {
    let ids: Vec<PartyId> = parties.iter().map(|p| p.me()).collect();
    let pos: BTreeMap<PartyId, usize> = ids.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let mut outputs: Vec<Option<Result<C::Output, TssError>>> =
        (0..parties.len()).map(|_| None).collect();
    let mut queue: VecDeque<(usize, Vec<u8>)> = VecDeque::new();
    let (mut messages, mut bytes) = (0usize, 0usize);
    let mut rng = match order {
        Order::Fifo => 0,
        Order::Shuffled(seed) => seed | 1,
    };

    let mut post = |from: usize, out: Vec<Message>, queue: &mut VecDeque<(usize, Vec<u8>)>| {
        for m in out {
            let targets: Vec<usize> = match m.to {
                Some(to) => pos.get(&to).copied().into_iter().collect(),
                None => (0..ids.len()).filter(|&i| i != from).collect(),
            };
            let enc = m.encode();
            for t in targets {
                for delivered in filter(&ids[t], enc.clone()) {
                    messages += 1;
                    bytes += delivered.len();
                    queue.push_back((t, delivered));
                }
            }
        }
    };

    for (i, p) in parties.iter_mut().enumerate() {
        match p.start() {
            Ok(Step::Continue(out)) => post(i, out, &mut queue),
            Ok(Step::Done(v, out)) => {
                post(i, out, &mut queue);
                outputs[i] = Some(Ok(v));
            }
            Err(e) => outputs[i] = Some(Err(e)),
        }
    }
    while !queue.is_empty() {
        let pick = if rng == 0 {
            0
        } else {
            // xorshift64: reproducible shuffling without a dependency.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % queue.len() as u64) as usize
        };
        let Some((to, bytes_in)) = queue.remove(pick) else {
            break;
        };
        if outputs[to].is_some() {
            continue; // finished or failed: it no longer listens
        }
        let step = Message::decode(&bytes_in).and_then(|m| parties[to].handle(m));
        match step {
            Ok(Step::Continue(out)) => post(to, out, &mut queue),
            Ok(Step::Done(v, out)) => {
                post(to, out, &mut queue);
                outputs[to] = Some(Ok(v));
            }
            Err(e) => outputs[to] = Some(Err(e)),
        }
    }
    let outputs = outputs
        .into_iter()
        .zip(parties.iter())
        .map(|(o, p)| o.unwrap_or_else(|| Err(p.missing())))
        .collect();
    LocalRun {
        outputs,
        messages,
        bytes,
    }
}
