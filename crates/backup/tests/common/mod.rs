//! A real 2-of-3 vault (engine keygen in one process) as `Held` shares with party keys.
#![allow(dead_code)]

use cosigner_party::{Held, PartyKeys, VaultRecord};
use cosigner_tss::local;
use cosigner_tss::{Committee, Keygen, KeygenParams, PartyId};

pub fn vault(id: &str) -> Vec<(PartyKeys, Held)> {
    let keys: Vec<PartyKeys> = (0..3).map(|_| PartyKeys::generate()).collect();
    let members: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| k.member(&format!("party-{i}")))
        .collect();
    let committee = Committee::new(2, keys.iter().map(|k| PartyId(k.party_id()))).unwrap();
    let machines = keys
        .iter()
        .map(|k| {
            Keygen::new(
                KeygenParams {
                    vault_id: id.into(),
                    committee: committee.clone(),
                    nonce: [9; 32],
                },
                PartyId(k.party_id()),
            )
            .unwrap()
        })
        .collect();
    let (shares, _) = local::run(machines).unwrap();
    let mut out = Vec::new();
    for share in shares {
        let k = keys
            .iter()
            .find(|k| k.party_id() == share.party().0)
            .unwrap()
            .clone();
        let record = VaultRecord::new(share.public().clone(), members.clone(), 1, 0).unwrap();
        out.push((k, Held::new(record, share).unwrap()));
    }
    out
}
