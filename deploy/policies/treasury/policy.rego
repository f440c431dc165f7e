# Treasury vault: signs only ether and ERC-20 transfers on Ethereum mainnet and payments on
# Bitcoin mainnet, to allowlisted recipients (change back to the vault excepted), within a
# per-transaction and a daily limit per asset; Bitcoin only with proven input amounts and a
# capped fee. Only the listed requesters may ask. Keygen and reshare are refused here
# (treasury committees change by an operator's hand, with another bundle), except the
# scheduled refresh of the same committee by a listed rotation initiator (a daemon).
package cosigner

import rego.v1

default allow := false

allow if {
	input.request.kind == "sign"
	input.payload.chain == "ethereum"
	input.payload.network == "1"
	count(input.payload.transfers) > 0
}

allow if {
	input.request.kind == "sign"
	input.payload.chain == "bitcoin"
	input.payload.network == "mainnet"
	count(input.payload.transfers) > 0
}

# What leaves the vault: change comes back to it and is neither a recipient nor spent.
outgoing contains t if {
	some t in input.payload.transfers
	not t.is_change
}

# A refresh keeps the committee and threshold: new shares, same holders.
scheduled_refresh if {
	input.request.kind == "reshare"
	input.request.refresh
	input.request.scheduled
	object.get(data.treasury, "rotation_initiators", {})[input.requester.party_id]
}

allow if scheduled_refresh

deny contains msg if {
	not data.treasury.requesters[input.requester.party_id]
	not scheduled_refresh
	msg := sprintf("requester %s may not ask this treasury", [input.requester.party_id])
}

deny contains msg if {
	input.request.kind != "sign"
	not scheduled_refresh
	msg := sprintf("%s is not allowed by the treasury policy", [input.request.kind])
}

deny contains msg if {
	input.payload.decoded.unknown_call
	msg := "the transaction calls a contract function this policy does not understand"
}

deny contains msg if {
	input.payload.decoded.erc20.function == "approve"
	msg := "token approvals are not allowed from the treasury"
}

deny contains msg if {
	some t in outgoing
	not data.treasury.allowlist[t.recipient]
	msg := sprintf("recipient %s is not on the allowlist", [t.recipient])
}

deny contains msg if {
	some t in outgoing
	not data.treasury.limits[t.asset]
	msg := sprintf("asset %s has no limits configured", [t.asset])
}

deny contains msg if {
	some asset, amount in input.totals
	limit := data.treasury.limits[asset].per_transaction
	greater(amount, limit)
	msg := sprintf("%s of %s exceeds the per-transaction limit %s", [amount, asset, limit])
}

# A segwit signature commits to its own input's amount only: without every previous
# transaction a PSBT can understate its fee (CVE-2020-14199).
deny contains msg if {
	input.payload.chain == "bitcoin"
	not input.payload.decoded.fee_proven
	msg := "an input lacks its previous transaction (non_witness_utxo): the fee cannot be verified"
}

deny contains msg if {
	input.payload.chain == "bitcoin"
	greater(input.payload.fee, data.treasury.bitcoin_max_fee)
	msg := sprintf("fee %s sat is over the limit %s", [input.payload.fee, data.treasury.bitcoin_max_fee])
}

deny contains msg if {
	some asset, total in input.history.windows["24h"].spent_with_this
	limit := data.treasury.limits[asset].daily
	greater(total, limit)
	msg := sprintf("this would bring %s spent in 24 hours to %s, over the daily limit %s", [asset, total, limit])
}

# a > b for non-negative decimal strings without leading zeros (exact at any size).
greater(a, b) if count(a) > count(b)

greater(a, b) if {
	count(a) == count(b)
	a > b
}
